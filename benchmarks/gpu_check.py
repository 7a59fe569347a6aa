"""The GPU check (issue 8): our trainer in bf16 on one GPU with a realistic vocabulary and sequence length.

Builds, offline, a word-level tokenizer of ``--vocab`` entries (default 151,936, Qwen2.5's) and a small Qwen2 from
config, then measures, and prints as one JSON object:

- ``train.sft`` / ``train.psft``: tokens/s and peak GPU memory of ``psftlib.train.train`` (bf16 autocast, gradient
  checkpointing, chunked log-prob head) on ``--examples`` sequences of ``--seq`` tokens; PSFT with 4 mini batches
  per train batch (its old-policy pass included), SFT with one;
- ``head``: peak GPU memory of the chunked log-prob/entropy head (``psftlib.logprobs.ChunkedLMHead``) against the
  naive full-logits path, forward + backward, ``--seq`` tokens x vocabulary (as ``bench_logprob_memory.py``);
- ``eval``: a short generation check, Hugging Face ``generate`` tokens/s, and vLLM (if importable) on the saved
  checkpoint.

    python benchmarks/gpu_check.py [--seq 4096] [--vocab 151936] [--hidden 1024] [--layers 8] [--out FILE]

Runs in well under 8 minutes on one H100. On a machine without CUDA it says so and exits 2 (``--help`` works).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SPECIALS = ["<|endoftext|>", "<|unk|>", "<|im_start|>", "<|im_end|>", "system", "user", "assistant"]
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|> ' + message['role'] + ' ' + message['content'] + ' <|im_end|> ' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|> assistant ' }}{% endif %}"
)


def build_tokenizer(vocab: int) -> Any:
    """A word-level tokenizer with ``vocab`` entries (``w0`` ... plus specials) and a chat template."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = {w: i for i, w in enumerate(SPECIALS)}
    for i in range(vocab - len(SPECIALS)):
        words[f"w{i}"] = len(words)
    tok = Tokenizer(models.WordLevel(vocab=words, unk_token="<|unk|>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<|unk|>", pad_token="<|endoftext|>",
                                   eos_token="<|im_end|>", model_max_length=1 << 20)  # fmt: skip
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_model(tokenizer: Any, hidden: int, layers: int, seq: int, seed: int = 0) -> Any:
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=int(hidden * 2.75),
                         num_hidden_layers=layers, num_attention_heads=max(2, hidden // 64),
                         num_key_value_heads=max(1, hidden // 256), max_position_embeddings=max(seq * 2, 8192),
                         tie_word_embeddings=True, pad_token_id=tokenizer.pad_token_id,
                         eos_token_id=tokenizer.eos_token_id, bos_token_id=None,
                         attn_implementation="sdpa")  # fmt: skip
    torch.manual_seed(seed)
    return Qwen2ForCausalLM(config)


def make_examples(tokenizer: Any, n: int, seq: int, seed: int = 0) -> list[Any]:
    """``n`` encoded demonstrations of exactly ``seq`` tokens (76 of chat template, system and prompt; response
    and EOS the rest)."""
    import random

    from psftlib.data import encode_all

    rng = random.Random(seed)
    vocab = len(tokenizer) - len(SPECIALS)
    draw = lambda k: " ".join(f"w{rng.randrange(vocab)}" for _ in range(k))  # noqa: E731
    rows = [
        {"system": "reason step by step", "prompt": draw(64), "response": draw(seq - 77)} for _ in range(n)
    ]
    examples, _ = encode_all(tokenizer, rows)
    return examples


def check_train(
    objective: str, tokenizer: Any, examples: list[Any], args: argparse.Namespace
) -> dict[str, Any]:
    import torch

    from psftlib.config import TrainConfig
    from psftlib.train import train

    model = build_model(tokenizer, args.hidden, args.layers, args.seq)
    mini = args.train_batch if objective == "sft" else args.train_batch // 4
    cfg = TrainConfig(objective=objective, train_batch_size=args.train_batch, mini_batch_size=mini,
                      micro_batch_size=args.micro_batch, epochs=1.0, lr=1e-5, bf16=True,
                      gradient_checkpointing=True, logprob_chunk_size=1024, save_checkpoint=False)  # fmt: skip
    torch.cuda.reset_peak_memory_stats()
    torch.cuda.synchronize()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        metrics = train(
            cfg, model, examples, out, tokenizer.pad_token_id, tokenizer=tokenizer, progress=False
        )
    torch.cuda.synchronize()
    wall = time.perf_counter() - start
    tokens = sum(m.get("tokens", 0) for m in metrics)
    result = {"objective": objective, "optimizer_steps": len(metrics), "tokens": tokens, "wall_s": round(wall, 2),
              "tokens_per_s": round(tokens / wall, 1), "peak_gpu_mib": round(torch.cuda.max_memory_allocated() / 2**20),
              "final_loss": metrics[-1].get("loss"), "final_entropy": metrics[-1].get("entropy")}  # fmt: skip
    del model
    torch.cuda.empty_cache()
    return result


def check_head(seq: int, hidden: int, vocab: int, chunk: int) -> dict[str, Any]:
    """Peak GPU memory above the inputs, naive full logits vs the chunked head (bf16 inputs, fp32 softmax)."""
    import torch

    from psftlib.logprobs import ChunkedLMHead

    out: dict[str, Any] = {"seq": seq, "hidden": hidden, "vocab": vocab, "chunk": chunk}
    for path in ("naive", "chunked"):
        torch.cuda.empty_cache()
        torch.manual_seed(0)
        h = torch.randn(seq, hidden, device="cuda", dtype=torch.bfloat16, requires_grad=True)
        w = (torch.randn(vocab, hidden, device="cuda", dtype=torch.bfloat16) * 0.02).requires_grad_(True)
        t = torch.randint(0, vocab, (seq,), device="cuda")
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        if path == "naive":
            logp = torch.log_softmax((h @ w.t()).float(), -1)
            lp = logp.gather(-1, t[:, None]).squeeze(-1)
            with torch.no_grad():
                ent = -(logp.exp() * logp).sum(-1)
        else:
            lp, ent, _ = ChunkedLMHead.apply(h, w, t, chunk, True)
        lp.sum().backward()
        torch.cuda.synchronize()
        out[f"{path}_peak_mib"] = round((torch.cuda.max_memory_allocated() - base) / 2**20)
        out[f"{path}_entropy"] = float(ent.float().mean())
        del h, w, t, lp, ent
    out["ratio"] = round(out["chunked_peak_mib"] / out["naive_peak_mib"], 3)
    out["entropy_abs_diff"] = abs(out["naive_entropy"] - out["chunked_entropy"])
    return out


def check_eval(tokenizer: Any, args: argparse.Namespace) -> dict[str, Any]:
    """HF generate tokens/s in bf16, and vLLM on the saved checkpoint when vllm imports."""
    import torch

    model = build_model(tokenizer, args.hidden, args.layers, args.seq).to("cuda", torch.bfloat16).eval()
    prompts = [tokenizer.apply_chat_template([{"role": "user", "content": f"w{i} w{i + 1} w{i + 2}"}],
                                             add_generation_prompt=True, tokenize=False) for i in range(8)]  # fmt: skip
    enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to("cuda")
    torch.cuda.synchronize()
    start = time.perf_counter()
    with torch.no_grad():
        gen = model.generate(**enc, max_new_tokens=args.gen_tokens, min_new_tokens=args.gen_tokens, do_sample=True,
                             temperature=0.7, top_p=0.95, pad_token_id=tokenizer.pad_token_id)  # fmt: skip
    torch.cuda.synchronize()
    new = (gen.shape[1] - enc["input_ids"].shape[1]) * gen.shape[0]
    result: dict[str, Any] = {
        "hf_new_tokens": int(new),
        "hf_tokens_per_s": round(new / (time.perf_counter() - start), 1),
    }
    if args.no_vllm:
        result["vllm"] = "skipped (--no-vllm)"
        return result
    try:
        import vllm  # noqa: F401
    except ImportError:
        result["vllm"] = "not installed (requirements-gpu.lock has it)"
        return result
    with tempfile.TemporaryDirectory() as ckpt:
        model.save_pretrained(ckpt)
        tokenizer.save_pretrained(ckpt)
        del model
        torch.cuda.empty_cache()
        try:
            from vllm import LLM, SamplingParams

            start = time.perf_counter()
            llm = LLM(model=ckpt, dtype="bfloat16", enforce_eager=True, gpu_memory_utilization=0.5,
                      max_model_len=2048, seed=0)  # fmt: skip
            load_s = time.perf_counter() - start
            start = time.perf_counter()
            outs = llm.generate(prompts, SamplingParams(temperature=0.7, top_p=0.95, max_tokens=args.gen_tokens,
                                                        ignore_eos=True), use_tqdm=False)  # fmt: skip
            n = sum(len(o.outputs[0].token_ids) for o in outs)
            result.update(
                vllm_load_s=round(load_s, 1),
                vllm_new_tokens=n,
                vllm_tokens_per_s=round(n / (time.perf_counter() - start), 1),
            )
        except Exception as err:  # report, do not fail the other checks
            result["vllm"] = f"error: {type(err).__name__}: {err}"[:500]
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--seq", type=int, default=4096, help="tokens per training sequence (>= 4096 for the issue)"
    )
    parser.add_argument("--vocab", type=int, default=151936, help="vocabulary size (Qwen2.5: 151,936)")
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument(
        "--examples", type=int, default=64, help="training sequences (two train batches of 32)"
    )
    parser.add_argument("--train-batch", type=int, default=32)
    parser.add_argument("--micro-batch", type=int, default=2)
    parser.add_argument("--chunk", type=int, default=1024, help="log-prob head chunk (tokens)")
    parser.add_argument("--gen-tokens", type=int, default=256)
    parser.add_argument("--no-vllm", action="store_true", help="skip the vLLM part of the eval check")
    parser.add_argument("--out", default=None, help="also write the JSON summary here")
    args = parser.parse_args(argv)

    import torch

    if not torch.cuda.is_available():
        print(json.dumps({"error": "no CUDA device: the GPU check needs one (use a GPU machine)"}))
        return 2
    torch.backends.cuda.matmul.allow_tf32 = True
    summary: dict[str, Any] = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__,
                               "config": {k: v for k, v in vars(args).items() if k != "out"}}  # fmt: skip
    start = time.perf_counter()
    tokenizer = build_tokenizer(args.vocab)
    examples = make_examples(tokenizer, args.examples, args.seq)
    summary["sequence_tokens"] = [
        min(len(e.input_ids) for e in examples),
        max(len(e.input_ids) for e in examples),
    ]
    summary["vocab"] = len(tokenizer)
    summary["head"] = check_head(args.seq, args.hidden, args.vocab, args.chunk)
    summary["train"] = {obj: check_train(obj, tokenizer, examples, args) for obj in ("sft", "psft")}
    sft, psft = summary["train"]["sft"], summary["train"]["psft"]
    summary["train"]["psft_over_sft_time_per_token"] = round(sft["tokens_per_s"] / psft["tokens_per_s"], 3)
    summary["eval"] = check_eval(tokenizer, args)
    summary["wall_s"] = round(time.perf_counter() - start, 1)
    text = json.dumps(summary, indent=1)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
