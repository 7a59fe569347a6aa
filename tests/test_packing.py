"""Padding-free packing (``padding_free``) gives the padded batch's log-probs, losses and gradients (fp32, 1e-5), in
the training forward, the old-policy refresh and the reference; and a step's telemetry reads the device once."""

import json
import math
from copy import deepcopy

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from psftlib.config import ConfigError, TrainConfig
from psftlib.data import Example, collate
from psftlib.logprobs import pack, token_logprobs
from psftlib.train import Plan, backward_mini_batch, train
from psftlib.train.plan import micro_batches
from psftlib.train.refresh import refresh
from psftlib.train.step import Reference
from psftlib.train.telemetry import read_step_scalars, step_row

VOCAB, PAD = 97, 0
TOL = {"atol": 1e-5, "rtol": 1e-5}


def _model(kind: str = "qwen2", attn: str = "sdpa", seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    shape = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, tie_word_embeddings=True, attn_implementation=attn)  # fmt: skip
    if kind == "llama":
        return LlamaForCausalLM(LlamaConfig(**shape)).float()
    return Qwen2ForCausalLM(Qwen2Config(**shape)).float()


def _examples(n: int = 8, seed: int = 1) -> list[Example]:
    """Sequences of very different lengths (3..29 tokens), a prompt then a response that carries the loss."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        length = 3 + (i * 11) % 27
        prompt = 1 + i % (length - 1)
        out.append(Example(torch.randint(1, VOCAB, (length,), generator=g).tolist(),
                           [0] * prompt + [1] * (length - prompt)))  # fmt: skip
    return out


def _perturb(model: torch.nn.Module, seed: int = 2, scale: float = 0.05) -> torch.nn.Module:
    """A copy with moved weights: the old policy / reference then differ from the policy (r != 1)."""
    moved = deepcopy(model)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in moved.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))
    return moved


def test_pack_restarts_positions_and_maps_back_to_the_padded_layout():
    batch = collate([Example([5, 6, 7], [0, 1, 1]), Example([8, 9], [0, 1]), Example([4], [1])], PAD)
    p = pack(batch["input_ids"], batch["attention_mask"])
    assert p.input_ids.tolist() == [[5, 6, 7, 8, 9, 4]]
    assert p.position_ids.tolist() == [[0, 1, 2, 0, 1, 0]]
    assert p.index.tolist() == [[0, 1, 2], [3, 4, -1], [5, -1, -1]]


@pytest.mark.parametrize("kind,attn", [("qwen2", "sdpa"), ("qwen2", "eager"), ("llama", "sdpa")])
@pytest.mark.parametrize("chunk", [None, 7])
def test_packed_equals_padded_logprobs_entropy_and_gradient(kind, attn, chunk):
    model = _model(kind, attn)
    batch = collate(_examples(), PAD)
    ids, att, sm = batch["input_ids"], batch["attention_mask"], batch["loss_mask"][:, 1:]
    assert (att == 0).any()  # there is padding to skip
    results = []
    for packed in (False, True):
        model.zero_grad()
        out = token_logprobs(model, ids, att, score_mask=sm, chunk_size=chunk, packed=packed)
        (out.logprobs * sm).sum().backward()
        results.append((out, [p.grad.clone() for p in model.parameters()]))
    (padded, g_padded), (packed, g_packed) = results
    torch.testing.assert_close(packed.logprobs * sm, padded.logprobs * sm, **TOL)
    torch.testing.assert_close(packed.entropy * sm, padded.entropy * sm, **TOL)
    assert torch.equal(packed.is_argmax * sm, padded.is_argmax * sm)
    for a, b in zip(g_packed, g_padded, strict=True):
        torch.testing.assert_close(a, b, **TOL)


def test_packing_needs_the_sequence_boundaries():
    """Without the restarting ``position_ids`` (one long sequence) the packed rows would attend to each other: the
    equality above is not a property of any packing, so it tests that the boundaries are honoured."""
    model = _model()
    batch = collate(_examples(), PAD)
    ids, att, sm = batch["input_ids"], batch["attention_mask"], batch["loss_mask"][:, 1:]
    padded = token_logprobs(model, ids, att, score_mask=sm)
    p = pack(ids, att)
    logits = model(input_ids=p.input_ids, use_cache=False).logits[0]  # positions 0..N-1, no boundaries
    joined = torch.log_softmax(logits, -1)[p.index[:, :-1].clamp(min=0)].gather(-1, ids[:, 1:, None])[..., 0]
    assert (joined * sm - padded.logprobs * sm).abs().max() > 1e-3


def _step(model, micro, objective, cfg, old=None, select=None, reference=None):
    model.zero_grad()
    parts, tensors = backward_mini_batch(model, micro, objective, cfg, old, select, reference)
    grads = [p.grad.clone() for p in model.parameters()]
    return parts, tensors, grads


@pytest.mark.parametrize("chunk", [None, 7])
@pytest.mark.parametrize(
    "variant",
    [
        {"objective": "psft"},
        {
            "objective": "psft",
            "old_policy_refresh": "never",
            "entropy_top_fraction": 0.5,
            "refresh_batch_size": 8,
        },
        {"objective": "sft_kl", "kl_estimator": "k3"},
        {"objective": "sft_kl", "kl_estimator": "full"},
        {"objective": "iw_sft"},
        {"objective": "dft"},
    ],
)
def test_training_step_packed_equals_padded(variant, chunk):
    """Loss, metrics and gradients of one optimizer step, with the old policy from a refresh (two widths: the
    refresh forward's and the micro batches') or the reference, at weights that moved since (r != 1)."""
    examples = _examples()
    initial = _model()
    results = []
    for padding_free in (False, True):
        cfg = TrainConfig(train_batch_size=8, mini_batch_size=4, micro_batch_size=2, logprob_chunk_size=chunk,
                          padding_free=padding_free, **variant)  # fmt: skip
        plan = Plan(cfg, len(examples), 1, 0)
        needs_ref = variant["objective"] != "psft" or variant.get("old_policy_refresh") == "never"
        reference = Reference(initial, lora=False) if needs_ref else None
        old = select = None
        if variant["objective"] == "psft":
            pending = refresh(initial, reference, examples, plan, 0, PAD, torch.device("cpu"))
            old, select = pending[1]["old"], pending[1]["select"]
        micro = micro_batches(examples, plan.indices(1), cfg, PAD, torch.device("cpu"))
        results.append(_step(_perturb(initial), micro, variant["objective"], cfg, old, select, reference))
    (parts_a, tensors_a, grads_a), (parts_b, tensors_b, grads_b) = results
    for pa, pb in zip(parts_a, parts_b, strict=True):
        assert pa.keys() == pb.keys()
        for key in pa:
            assert float(pb[key]) == pytest.approx(float(pa[key]), rel=1e-5, abs=1e-5), key
    if variant["objective"] == "psft":  # the old policy really differs from the policy
        assert max(float(p["ratio_max"]) for p in parts_a) > 1.001
    for ta, tb in zip(tensors_a, tensors_b, strict=True):
        torch.testing.assert_close(tb["logprobs"] * ta["mask"], ta["logprobs"] * ta["mask"], **TOL)
    for a, b in zip(grads_a, grads_b, strict=True):
        torch.testing.assert_close(b, a, **TOL)


def test_step_row_reads_the_device_once_and_writes_what_float_reads(monkeypatch):
    """The step's scalars (losses, telemetry sums, counts) come back in one ``.tolist()``; the row is the one that
    reading each of them with ``float(...)`` gives, byte for byte."""
    examples = _examples()
    cfg = TrainConfig(objective="psft", train_batch_size=8, mini_batch_size=4, micro_batch_size=2)
    plan = Plan(cfg, len(examples), 1, 0)
    micro = micro_batches(examples, plan.indices(0), cfg, PAD, torch.device("cpu"))
    parts, tensors = backward_mini_batch(_model(), micro, "psft", cfg)
    assert isinstance(parts[0]["loss"], torch.Tensor) and isinstance(tensors[0]["entropy_sum"], torch.Tensor)
    as_floats = (
        [{k: float(v) for k, v in p.items()} for p in parts],
        [{k: float(v) if v.dim() == 0 else v for k, v in t.items() if v is not None} | {"old": t["old"]}
         for t in tensors],
    )  # fmt: skip
    calls = []
    tolist = torch.Tensor.tolist
    monkeypatch.setattr(torch.Tensor, "tolist", lambda self: calls.append(self.shape) or tolist(self))
    row = step_row(plan, 0, parts, tensors, micro, torch.tensor(0.5), 1e-6, 1.0, 1.0)
    # one read of the device scalars (the loss and every objective metric, 5 sums per micro batch, grad norm); then
    # the cross-rank reductions of host values (on the device only with several processes): stats, metric sums, maxima
    k = len([k for k in parts[0] if k != "num_tokens"])
    device_scalars = sum(isinstance(v, torch.Tensor) for v in parts[0].values())
    assert device_scalars == len(parts[0])  # objectives return device scalars, no host read of their own
    assert calls == [(len(micro) * (device_scalars + 5) + 1,), (5,), (k + 1,), (k,)]
    monkeypatch.undo()
    expected = step_row(plan, 0, *as_floats, micro, 0.5, 1e-6, 1.0, 1.0)
    assert json.dumps(row) == json.dumps(expected)
    assert row["tokens"] == sum(len(examples[i].input_ids) for i in plan.indices(0))
    assert math.isclose(row["ratio_max"], 1.0) and row["grad_norm"] == 0.5


def test_padding_free_is_a_boolean_option_off_by_default():
    assert TrainConfig().padding_free is False
    assert TrainConfig(padding_free=True).padding_free is True
    with pytest.raises(ConfigError, match="padding_free: got 'yes'; allowed: true or false"):
        TrainConfig(padding_free="yes")


def test_a_padding_free_run_matches_the_padded_run(tiny_model_and_examples, tmp_path):
    """A whole PSFT run on the smoke world (refreshes, 2 train batches): the metrics agree to 1e-5, apart from the
    measured timings; the token count is the same (packing drops padding, not tokens)."""
    model, tok, examples = tiny_model_and_examples
    rows = {}
    for padding_free in (False, True):
        cfg = TrainConfig(objective="psft", train_batch_size=8, mini_batch_size=4, micro_batch_size=2, lr=1e-3,
                          epochs=16 / len(examples), padding_free=padding_free, save_checkpoint=False)  # fmt: skip
        rows[padding_free] = train(cfg, deepcopy(model), examples, tmp_path / str(padding_free), tok.pad_token_id,
                                   tok, progress=False)  # fmt: skip
    assert len(rows[False]) == 4
    for a, b in zip(rows[False], rows[True], strict=True):
        for key in a:
            if key not in ("tokens_per_s", "wall_s"):
                assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-5), key


def test_read_step_scalars_resolves_tensor_metrics_of_an_objective_too():
    """A metric an objective returns as a device scalar (instead of ``float(...)``, one sync each) is read in the
    same single ``.tolist()`` and gives the float the objective would have returned."""
    parts = [{"nll": torch.tensor(1.25), "ratio_max": 2.0, "num_tokens": 3.0, "loss": torch.tensor(0.1)}]
    tensors = [{"entropy_sum": torch.tensor(0.5), "argmax_sum": torch.tensor(1.0), "n_response": torch.tensor(3.0),
                "mask": torch.ones(1, 3)}]  # fmt: skip
    micro = [{"attention_mask": torch.ones(1, 4, dtype=torch.long)}]
    got, sums, grad_norm = read_step_scalars(parts, tensors, micro, torch.tensor(0.75))
    assert got == [{"nll": 1.25, "ratio_max": 2.0, "num_tokens": 3.0, "loss": float(torch.tensor(0.1))}]
    assert sums == [{"entropy_sum": 0.5, "argmax_sum": 1.0, "n_response": 3.0, "tokens": 4.0, "trained": 3.0}]
    assert grad_norm == 0.75 and isinstance(
        parts[0]["nll"], torch.Tensor
    )  # the caller's dicts are not changed
