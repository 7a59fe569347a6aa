"""The chunked LM head equals the full-logits path, in value and gradient, and keeps no logits for backward."""

import pytest
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from psftlib.logprobs import ChunkedLMHead, token_logprobs


def _model(vocab=257, dtype=torch.float32):
    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)  # fmt: skip
    return Qwen2ForCausalLM(cfg).to(dtype)


def _batch(vocab=257, length=24):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, vocab, (3, length), generator=g)
    att = torch.ones_like(ids)
    att[1, 18:] = 0
    mask = torch.zeros(3, length)
    mask[:, 9:] = 1
    mask[1, 18:] = 0
    return ids, att, mask[:, 1:]


@pytest.mark.parametrize("chunk", [1, 5, 1024])
def test_chunked_equals_naive_to_1e5_in_value_entropy_and_gradient(chunk):
    model = _model()
    ids, att, sm = _batch()
    naive = token_logprobs(model, ids, att, score_mask=sm)
    (naive.logprobs * sm).sum().backward()
    g_naive = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    chunked = token_logprobs(model, ids, att, score_mask=sm, chunk_size=chunk)
    (chunked.logprobs * sm).sum().backward()
    torch.testing.assert_close(chunked.logprobs, naive.logprobs * (sm > 0), atol=1e-5, rtol=0)
    torch.testing.assert_close(chunked.entropy * sm, naive.entropy * sm, atol=1e-5, rtol=0)
    assert torch.equal(chunked.is_argmax * sm, naive.is_argmax * sm)
    for p, g in zip(model.parameters(), g_naive, strict=True):
        torch.testing.assert_close(p.grad, g, atol=1e-5, rtol=1e-4)


def test_chunked_head_gradcheck_in_double():
    torch.manual_seed(0)
    h = torch.randn(7, 5, dtype=torch.float64, requires_grad=True)
    w = torch.randn(11, 5, dtype=torch.float64, requires_grad=True)
    t = torch.randint(0, 11, (7,))

    def f(h, w):
        return ChunkedLMHead.apply(h, w, t, 3, False)[0].double()

    # the head accumulates in fp32, so compare against finite differences at fp32-level tolerance
    assert torch.autograd.gradcheck(f, (h, w), eps=1e-3, atol=1e-3, rtol=1e-3)


def test_chunked_backward_keeps_no_full_logits():
    """Nothing of size [tokens, vocab] is saved for backward by the chunked path; the naive path saves several."""
    vocab = 5000
    model = _model(vocab=vocab)
    ids, att, sm = _batch(vocab=vocab, length=96)  # [tokens, V] is then far larger than the [V, H] weight
    n_logits = int(att[:, 1:].sum()) * vocab // 2  # well below any [tokens, V] tensor of this batch

    def largest_saved(chunk):
        sizes = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t: sizes.append(t.numel()) or t, lambda t: t):
            token_logprobs(model, ids, att, score_mask=sm, chunk_size=chunk)
        return sorted(sizes, reverse=True)

    assert largest_saved(None)[0] >= n_logits
    chunked = largest_saved(4)
    assert chunked[0] < n_logits, chunked[:3]
