"""The GPU check (issues 8 and 18): issue 18's table in one run, same model and data for every row.

A random-init ``Qwen2ForCausalLM`` built from config (nothing downloaded) with a word-level tokenizer of ``vocab``
entries, trained on ``examples`` sequences of exactly ``seq`` tokens (and, for the packing rows, on a realistic mix
of lengths), bf16 autocast and gradient checkpointing on a GPU. Each row trains ``examples / train_batch`` train
batches and is timed in **steady state**: from the end of the first train batch (warm-up: CUDA context, kernels,
allocator) to the end of the last, with a device synchronisation at both ends. Rows (``--rows`` picks some):

========================  ========================================================================================
``sft``                   our SFT, one optimizer step per train batch
``sft_8_steps``           our SFT, 8 mini batches per train batch
``psft``                  our PSFT, 8 mini batches per train batch (the old-policy pass included)
``psft_refresh16``        our PSFT with ``refresh_batch_size: 16``
``sft_full_logits``       our SFT with ``logprob_chunk_size: null`` (full logits instead of the chunked head)
``sft_padding_free``      our SFT with ``padding_free: true`` on the fixed-length sequences
``sft_mix``               our SFT on the length mix, padded micro batches
``sft_mix_padding_free``  our SFT on the length mix, ``padding_free: true``
``trl_sft``               TRL ``SFTTrainer``, same batches (micro batch x gradient accumulation = train batch)
``plain_loop``            a plain PyTorch loop: HF forward with labels, fused AdamW, same micro batches
========================  ========================================================================================

Each row: steady tokens/s (non-padding tokens), peak GPU memory (GiB), MFU (model FLOPs 6N + 12·L·H·T per token,
N the matmul parameters, T the token-weighted mean sequence length; recomputation and the old-policy pass are not
counted) against ``--peak-tflops`` (H100/H200: 989 dense bf16). Then the ratios issue 18 sets targets for, the
log-prob head's memory (chunked vs full logits, as ``bench_logprob_memory.py``) and, on a GPU, a short generation
check (HF ``generate``, and vLLM if importable).

    python benchmarks/gpu_check.py              # the Qwen2.5-1.5B shape (hidden 1536, 28 layers, 12/2 heads)
    python benchmarks/gpu_check.py --quick      # the small shape (hidden 1024, 8 layers)
    python benchmarks/gpu_check.py --tiny --device cpu --out /tmp/x.json   # the code path end to end, seconds

The JSON summary goes to ``benchmarks/results/<date>_<device>.json`` on a GPU (``--out`` elsewhere), rewritten
after every row, so a run cut short keeps what it measured. Without CUDA (and no ``--device cpu``) it says so and
exits 2. CPU timings are no GPU result: the summary says ``"gpu_result": false`` and judges no target.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import importlib.metadata
import json
import math
import platform
import re
import subprocess
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
TEMPLATE_TOKENS = 13  # chat template and system prompt around the prompt and response words, EOS included
SHAPES: dict[str, dict[str, int]] = {  # model, data and batch shape of each preset
    "1.5b": dict(hidden=1536, layers=28, heads=12, kv_heads=2, intermediate=8960, vocab=151_936, seq=4096,
                 examples=96, train_batch=32, micro_batch=4, chunk=1024),
    "quick": dict(hidden=1024, layers=8, heads=16, kv_heads=4, intermediate=2816, vocab=151_936, seq=4096,
                  examples=96, train_batch=32, micro_batch=4, chunk=1024),
    "tiny": dict(hidden=32, layers=1, heads=2, kv_heads=1, intermediate=64, vocab=256, seq=32, examples=8,
                 train_batch=4, micro_batch=2, chunk=16),
}  # fmt: skip
# the table first; packing last (with SDPA a packed row attends through a dense [N, N] mask: the slowest)
ROWS = ("sft", "sft_8_steps", "psft", "psft_refresh16", "sft_full_logits", "trl_sft", "plain_loop", "sft_mix",
        "sft_mix_padding_free", "sft_padding_free")  # fmt: skip
PEAK_TFLOPS = {"H100": 989.4, "H200": 989.4, "H800": 989.4, "GH200": 989.4, "A100": 312.0}  # dense bf16
# issue 18's targets: (what, ratio key, comparison, bound)
TARGETS = [
    ("PSFT / SFT time <= 1.25x", "psft_over_sft_time", "<=", 1.25),
    ("our SFT >= 1.0x TRL SFTTrainer", "sft_over_trl_speed", ">=", 1.0),
    ("our SFT >= 1.0x the plain loop", "sft_over_plain_speed", ">=", 1.0),
    ("chunked head <= 5 % slower than full logits", "chunked_over_full_time", "<=", 1.05),
    ("chunked head <= 0.3x the full logits' memory", "head_memory_ratio", "<=", 0.3),
    ("MFU >= 35 %", "sft_mfu", ">=", 0.35),
]


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


def build_model(tokenizer: Any, shape: dict[str, int], device: str, attn: str = "sdpa", seed: int = 0) -> Any:
    """The random-init Qwen2 of ``shape``, built directly on ``device`` (fp32 weights; training autocasts)."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=shape["hidden"], intermediate_size=shape["intermediate"],
                         num_hidden_layers=shape["layers"], num_attention_heads=shape["heads"],
                         num_key_value_heads=shape["kv_heads"], max_position_embeddings=max(shape["seq"] * 2, 8192),
                         tie_word_embeddings=True, pad_token_id=tokenizer.pad_token_id, use_cache=False,
                         eos_token_id=tokenizer.eos_token_id, bos_token_id=None, attn_implementation=attn)  # fmt: skip
    torch.manual_seed(seed)
    with torch.device(device):
        return Qwen2ForCausalLM(config)


def make_examples(
    tokenizer: Any, n: int, seq: int, seed: int = 0, lengths: list[int] | None = None
) -> list[Any]:
    """``n`` encoded demonstrations of exactly ``seq`` tokens each (or of ``lengths``): chat template, system prompt
    and prompt words (up to 64), then the response and EOS."""
    import random

    from psftlib.data import encode_all

    rng = random.Random(seed)
    vocab = len(tokenizer) - len(SPECIALS)
    draw = lambda k: " ".join(f"w{rng.randrange(vocab)}" for _ in range(k))  # noqa: E731
    rows = []
    for length in lengths or [seq] * n:
        prompt = min(64, max(1, length // 4))
        rows.append({"system": "reason step by step", "prompt": draw(prompt),
                     "response": draw(length - TEMPLATE_TOKENS - prompt)})  # fmt: skip
    examples, _ = encode_all(tokenizer, rows)
    return examples


def length_mix(n: int, seq: int, seed: int = 0) -> list[int]:
    """A realistic mix of ``n`` demonstration lengths: log-normal, median seq / 4, clipped to [seq / 16, seq]
    (chat SFT data: many short answers, a long tail up to the length limit)."""
    import random

    rng = random.Random(seed)
    low = max(TEMPLATE_TOKENS + 4, seq // 16)
    return [min(seq, max(low, round(rng.lognormvariate(math.log(seq / 4), 0.8)))) for _ in range(n)]


class Device:
    """Synchronisation, peak memory and model FLOPs on one device (CUDA or CPU)."""

    def __init__(self, name: str, peak_tflops: float | None):
        import torch

        self.torch, self.name = torch, name
        self.cuda = name.startswith("cuda")
        self.label = (
            torch.cuda.get_device_name(0)
            if self.cuda
            else f"CPU {platform.processor() or platform.machine()}"
        )
        known = next((v for k, v in PEAK_TFLOPS.items() if self.cuda and k in self.label), None)
        self.peak_tflops = peak_tflops or known

    def sync(self) -> float:
        if self.cuda:
            self.torch.cuda.synchronize()
        return time.perf_counter()

    def reset(self) -> None:
        gc.collect()
        if self.cuda:
            self.torch.cuda.empty_cache()
            self.torch.cuda.reset_peak_memory_stats()

    def peak_gib(self) -> float | None:
        return round(self.torch.cuda.max_memory_allocated() / 2**30, 2) if self.cuda else None

    def mfu(
        self, model: Any, shape: dict[str, int], examples: list[Any], tokens_per_s: float
    ) -> float | None:
        """Model FLOPs utilisation: (6N + 12·L·H·T) x tokens/s over the peak (N: matmul parameters)."""
        if not self.peak_tflops:
            return None
        n = sum(p.numel() for p in model.parameters())
        if not model.config.tie_word_embeddings:
            n -= model.get_input_embeddings().weight.numel()  # a lookup, not a matmul (the head is counted)
        lengths = [len(e.input_ids) for e in examples]
        mean_len = sum(x * x for x in lengths) / sum(lengths)  # token-weighted
        flops = 6 * n + 12 * shape["layers"] * shape["hidden"] * mean_len
        return round(flops * tokens_per_s / (self.peak_tflops * 1e12), 4)


def _steady(marks: list[float], tokens: list[int]) -> dict[str, Any]:
    """Tokens/s from the end of the first train batch to the end of the last; ``marks``: the start and the end of
    every train batch, ``tokens``: each train batch's non-padding tokens."""
    if len(marks) < 3 or len(tokens) < 2:
        raise ValueError("a row needs at least 2 train batches to exclude the first (raise --examples)")
    seconds = marks[-1] - marks[1]
    return {"train_batches": len(tokens), "steady_tokens": sum(tokens[1:]), "steady_s": round(seconds, 3),
            "tokens_per_s": round(sum(tokens[1:]) / seconds, 1), "first_train_batch_s": round(marks[1] - marks[0], 3)}  # fmt: skip


def run_ours(
    tok: Any, examples: list[Any], shape: dict, dev: Device, attn: str, **cfg_overrides: Any
) -> dict:
    """``psftlib.train.train`` timed per train batch (an in-training 'evaluator' that only reads the clock)."""
    from psftlib.config import TrainConfig
    from psftlib.train import train

    dev.reset()
    model = build_model(tok, shape, dev.name, attn)
    values = dict(objective="sft", train_batch_size=shape["train_batch"], mini_batch_size=shape["train_batch"],
                  micro_batch_size=shape["micro_batch"], epochs=1.0, lr=1e-5, bf16=dev.cuda, gradient_checkpointing=True,
                  logprob_chunk_size=shape["chunk"], save_checkpoint=False)  # fmt: skip
    cfg = TrainConfig(**{**values, **cfg_overrides})
    marks: list[float] = []

    def clock(_model: Any) -> dict[str, float]:
        marks.append(dev.sync())
        return {}

    with tempfile.TemporaryDirectory() as out:
        rows = train(cfg, model, examples, out, tok.pad_token_id, tokenizer=tok, progress=False, evaluator=clock,
                     eval_every=cfg.steps_per_train_batch)  # fmt: skip
    per_tb: dict[int, int] = {}
    for r in rows:
        tb = math.ceil(r["train_batch"] - 1e-9)
        per_tb[tb] = per_tb.get(tb, 0) + r["tokens"]
    result = _steady(marks, list(per_tb.values()))
    result.update(peak_gib=dev.peak_gib(), mfu=dev.mfu(model, shape, examples, result["tokens_per_s"]),
                  optimizer_steps=len(rows), mini_batch=cfg.mini_batch_size, final_loss=rows[-1]["loss"],
                  attn=attn, config={k: v for k, v in cfg_overrides.items()})  # fmt: skip
    del model
    return result


def run_trl(tok: Any, examples: list[Any], shape: dict, dev: Device, attn: str) -> dict:
    """TRL's ``SFTTrainer`` on the same pre-tokenized sequences (labels -100 off the response), same batches."""
    import trl
    from datasets import Dataset
    from transformers import PrinterCallback, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    dev.reset()
    model = build_model(tok, shape, dev.name, attn)
    data = Dataset.from_list([{"input_ids": e.input_ids,
                               "labels": [t if m else -100 for t, m in zip(e.input_ids, e.loss_mask, strict=True)]}
                              for e in examples])  # fmt: skip
    fields = (
        SFTConfig.__dataclass_fields__
    )  # transformers 5.24 renamed gradient_checkpointing (5.17 has only that)
    ckpt = "activation_checkpointing" if "activation_checkpointing" in fields else "gradient_checkpointing"
    marks: list[float] = []
    counted: dict[int, int] = {}

    class Clock(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            marks.append(dev.sync())

        def on_step_end(self, args, state, control, **kwargs):
            marks.append(dev.sync())

    class Counting(SFTTrainer):
        def training_step(self, model, inputs, num_items_in_batch=None):
            step = self.state.global_step
            counted[step] = counted.get(step, 0) + int(inputs["attention_mask"].sum())
            return super().training_step(model, inputs, num_items_in_batch)

    with tempfile.TemporaryDirectory() as out:
        args = SFTConfig(output_dir=out, per_device_train_batch_size=shape["micro_batch"], num_train_epochs=1,
                         gradient_accumulation_steps=shape["train_batch"] // shape["micro_batch"], learning_rate=1e-5,
                         lr_scheduler_type="constant", weight_decay=0.1, max_grad_norm=1.0, bf16=dev.cuda,
                         use_cpu=not dev.cuda, max_length=None, report_to=[], save_strategy="no",
                         logging_strategy="no", dataloader_num_workers=0, disable_tqdm=True, seed=0,
                         **{ckpt: True})  # fmt: skip
        trainer = Counting(
            model=model, args=args, train_dataset=data, processing_class=tok, callbacks=[Clock()]
        )
        trainer.remove_callback(PrinterCallback)  # its log lines would go to stdout, where the summary goes
        trainer.train()
    result = _steady(marks, [counted[s] for s in sorted(counted)])
    result.update(peak_gib=dev.peak_gib(), mfu=dev.mfu(model, shape, examples, result["tokens_per_s"]),
                  optimizer_steps=len(counted), optim=str(args.optim), trl=trl.__version__, attn=attn)  # fmt: skip
    del model, trainer
    return result


def run_plain(tok: Any, examples: list[Any], shape: dict, dev: Device, attn: str) -> dict:
    """The plain loop: micro batches through the HF forward with labels (loss over the train batch's response
    tokens via ``num_items_in_batch``), gradient checkpointing, clipping, fused AdamW; one step per train batch."""
    import contextlib

    import torch

    from psftlib.data import collate

    dev.reset()
    model = build_model(tok, shape, dev.name, attn)
    # transformers 5.24 renamed it (5.17 has only the old name)
    getattr(model, "activation_checkpointing_enable", model.gradient_checkpointing_enable)()
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5, weight_decay=0.1, fused=True)
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if dev.cuda else contextlib.nullcontext
    tb, mb = shape["train_batch"], shape["micro_batch"]
    marks, tokens = [dev.sync()], []
    for start in range(0, len(examples) - tb + 1, tb):
        batch = examples[start : start + tb]
        n_items = sum(sum(e.loss_mask[1:]) for e in batch)  # labels HF scores after its shift
        tokens.append(sum(len(e.input_ids) for e in batch))
        for i in range(0, tb, mb):
            micro = {k: v.to(dev.name) for k, v in collate(batch[i : i + mb], tok.pad_token_id).items()}
            labels = micro["input_ids"].masked_fill(micro["loss_mask"] == 0, -100)
            with autocast():
                out = model(input_ids=micro["input_ids"], attention_mask=micro["attention_mask"], labels=labels,
                            num_items_in_batch=n_items, use_cache=False)  # fmt: skip
            out.loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        marks.append(dev.sync())
    result = _steady(marks, tokens)
    result.update(
        peak_gib=dev.peak_gib(), mfu=dev.mfu(model, shape, examples, result["tokens_per_s"]), attn=attn
    )
    del model, opt
    return result


def check_head(shape: dict[str, int], dev: Device) -> dict[str, Any]:
    """Peak memory above the inputs, full logits vs the chunked head, ``seq`` tokens x vocabulary, forward and
    backward (bf16 inputs on a GPU, fp32 softmax); and their entropies, which must agree."""
    import torch

    from psftlib.logprobs import ChunkedLMHead

    seq, hidden, vocab, chunk = shape["seq"], shape["hidden"], shape["vocab"], shape["chunk"]
    dtype = torch.bfloat16 if dev.cuda else torch.float32
    out: dict[str, Any] = {"seq": seq, "hidden": hidden, "vocab": vocab, "chunk": chunk}
    for path in ("full", "chunked"):
        dev.reset()
        torch.manual_seed(0)
        h = torch.randn(seq, hidden, device=dev.name, dtype=dtype, requires_grad=True)
        w = (torch.randn(vocab, hidden, device=dev.name, dtype=dtype) * 0.02).requires_grad_(True)
        t = torch.randint(0, vocab, (seq,), device=dev.name)
        dev.sync()
        if dev.cuda:  # the peak above the inputs, not the temporaries that made them
            torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated() if dev.cuda else 0
        if path == "full":
            logp = torch.log_softmax((h @ w.t()).float(), -1)
            lp = logp.gather(-1, t[:, None]).squeeze(-1)
            with torch.no_grad():
                ent = -(logp.exp() * logp).sum(-1)
        else:
            lp, ent, _ = ChunkedLMHead.apply(h, w, t, chunk, True)
        lp.sum().backward()
        dev.sync()
        out[f"{path}_peak_mib"] = (
            round((torch.cuda.max_memory_allocated() - base) / 2**20) if dev.cuda else None
        )
        out[f"{path}_entropy"] = float(ent.float().mean())
        del h, w, t, lp, ent
    if dev.cuda:
        out["ratio"] = round(out["chunked_peak_mib"] / out["full_peak_mib"], 3)
    out["entropy_abs_diff"] = abs(out["full_entropy"] - out["chunked_entropy"])
    return out


def check_eval(
    tokenizer: Any, shape: dict[str, int], dev: Device, gen_tokens: int, no_vllm: bool
) -> dict[str, Any]:
    """HF generate tokens/s in bf16 (8 prompts), and vLLM on the saved checkpoint when vllm imports."""
    import torch

    model = build_model(tokenizer, shape, dev.name).to(torch.bfloat16).eval()
    model.config.use_cache = True
    prompts = [tokenizer.apply_chat_template([{"role": "user", "content": f"w{i} w{i + 1} w{i + 2}"}],
                                             add_generation_prompt=True, tokenize=False) for i in range(8)]  # fmt: skip
    enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(dev.name)
    start = dev.sync()
    with torch.no_grad():
        gen = model.generate(**enc, max_new_tokens=gen_tokens, min_new_tokens=gen_tokens, do_sample=True,
                             temperature=0.7, top_p=0.95, pad_token_id=tokenizer.pad_token_id)  # fmt: skip
    new = (gen.shape[1] - enc["input_ids"].shape[1]) * gen.shape[0]
    result: dict[str, Any] = {
        "hf_new_tokens": int(new),
        "hf_tokens_per_s": round(new / (dev.sync() - start), 1),
    }
    if no_vllm:
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
        dev.reset()
        try:
            from vllm import LLM, SamplingParams

            start = time.perf_counter()
            llm = LLM(model=ckpt, dtype="bfloat16", enforce_eager=True, gpu_memory_utilization=0.5,
                      max_model_len=2048, seed=0)  # fmt: skip
            load_s = time.perf_counter() - start
            start = time.perf_counter()
            outs = llm.generate(prompts, SamplingParams(temperature=0.7, top_p=0.95, max_tokens=gen_tokens,
                                                        ignore_eos=True), use_tqdm=False)  # fmt: skip
            n = sum(len(o.outputs[0].token_ids) for o in outs)
            result.update(vllm_load_s=round(load_s, 1), vllm_new_tokens=n,
                          vllm_tokens_per_s=round(n / (time.perf_counter() - start), 1))  # fmt: skip
        except Exception as err:  # report, do not fail the other checks
            result["vllm"] = f"error: {type(err).__name__}: {err}"[:500]
    return result


def run_row(name: str, tok: Any, data: dict[str, list[Any]], shape: dict, dev: Device, attn: str,
            packed_attn: str) -> dict[str, Any]:  # fmt: skip
    """One row of the table (:data:`ROWS`)."""
    fixed, mix = data["fixed"], data["mix"]
    eighth = max(shape["micro_batch"], shape["train_batch"] // 8)  # 8 mini batches per train batch
    if name == "sft":
        return run_ours(tok, fixed, shape, dev, attn)
    if name == "sft_8_steps":
        return run_ours(tok, fixed, shape, dev, attn, mini_batch_size=eighth)
    if name == "psft":
        return run_ours(tok, fixed, shape, dev, attn, objective="psft", mini_batch_size=eighth)
    if name == "psft_refresh16":
        return run_ours(tok, fixed, shape, dev, attn, objective="psft", mini_batch_size=eighth,
                        refresh_batch_size=min(16, shape["train_batch"]))  # fmt: skip
    if name == "sft_full_logits":
        return run_ours(tok, fixed, shape, dev, attn, logprob_chunk_size=None)
    if name == "sft_padding_free":
        return run_ours(tok, fixed, shape, dev, packed_attn, padding_free=True)
    if name == "sft_mix":
        return run_ours(tok, mix, shape, dev, attn)
    if name == "sft_mix_padding_free":
        return run_ours(tok, mix, shape, dev, packed_attn, padding_free=True)
    if name == "trl_sft":
        return run_trl(tok, fixed, shape, dev, attn)
    if name == "plain_loop":
        return run_plain(tok, fixed, shape, dev, attn)
    raise ValueError(f"--rows: unknown row {name!r}; known: {', '.join(ROWS)}")


def ratios(rows: dict[str, dict], head: dict | None) -> dict[str, float]:
    """The ratios issue 18 sets targets for (and the packing speed-up), from whatever rows were measured."""
    tps = {k: v["tokens_per_s"] for k, v in rows.items() if "tokens_per_s" in v}
    pairs = {"psft_over_sft_time": ("sft", "psft"), "psft_refresh16_over_sft_time": ("sft", "psft_refresh16"),
             "sft_8_steps_over_sft_time": ("sft", "sft_8_steps"), "chunked_over_full_time": ("sft_full_logits", "sft"),
             "padding_free_over_padded_time_fixed": ("sft", "sft_padding_free"),
             "padding_free_over_padded_time_mix": ("sft_mix", "sft_mix_padding_free"),
             "sft_over_trl_speed": ("sft", "trl_sft"), "sft_over_plain_speed": ("sft", "plain_loop")}  # fmt: skip
    out = {}
    for key, (a, b) in pairs.items():
        if (
            a in tps and b in tps
        ):  # "x_over_y_time" = time(x) / time(y) = tps(y) / tps(x); "_speed": tps(x) / tps(y)
            out[key] = round(tps[a] / tps[b], 3)
    if (peak := rows.get("sft", {}).get("peak_gib")) and (
        full := rows.get("sft_full_logits", {}).get("peak_gib")
    ):
        out["sft_memory_chunked_over_full"] = round(peak / full, 3)
    a, b = rows.get("sft_mix", {}).get("final_loss"), rows.get("sft_mix_padding_free", {}).get("final_loss")
    if (
        a is not None and b is not None
    ):  # packing changes no maths: the same losses up to rounding (bf16 on a GPU)
        out["mix_padding_free_final_loss_abs_diff"] = abs(a - b)
    if head and head.get("ratio") is not None:
        out["head_memory_ratio"] = head["ratio"]
    if rows.get("sft", {}).get("mfu") is not None:
        out["sft_mfu"] = rows["sft"]["mfu"]
    return out


def judge(ratio: dict[str, float], gpu_result: bool) -> list[dict[str, Any]]:
    """Each target of issue 18 with its measured value; ``met`` only for a GPU result (else null)."""
    out = []
    for what, key, op, bound in TARGETS:
        value = ratio.get(key)
        met = None if value is None or not gpu_result else (value <= bound if op == "<=" else value >= bound)
        out.append({"target": what, "value": value, "met": met})
    return out


def versions() -> dict[str, Any]:
    import torch
    import transformers

    out = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
           "transformers": transformers.__version__}  # fmt: skip
    for name in ("trl", "flash_attn", "vllm"):  # from the installed metadata: importing vllm takes seconds
        try:
            out[name] = importlib.metadata.version(name.replace("_", "-"))
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    try:
        out["commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                       text=True, timeout=10).stdout.strip() or None  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        out["commit"] = None
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    preset = parser.add_mutually_exclusive_group()
    preset.add_argument("--quick", action="store_true", help="the small shape (hidden 1024, 8 layers)")
    preset.add_argument("--tiny", action="store_true", help="a tiny shape that runs in seconds (tests, CPU)")
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu (timings then mean nothing)")
    for key in SHAPES["1.5b"]:
        parser.add_argument(
            f"--{key.replace('_', '-')}", type=int, default=None, help=f"override the preset's {key}"
        )
    parser.add_argument(
        "--rows", default=",".join(ROWS), help=f"comma-separated rows to run (default all: {ROWS})"
    )
    parser.add_argument("--attn", default="sdpa", help="attention implementation of the padded rows")
    parser.add_argument("--packed-attn", default="auto",
                        help="attention of the padding_free rows; auto: flash_attention_2 if flash_attn imports")  # fmt: skip
    parser.add_argument("--peak-tflops", type=float, default=None, help="for MFU (H100/H200 known: 989)")
    parser.add_argument("--gen-tokens", type=int, default=256)
    parser.add_argument("--no-eval", action="store_true", help="skip the generation check")
    parser.add_argument("--no-vllm", action="store_true", help="skip the vLLM part of the generation check")
    parser.add_argument(
        "--out", default=None, help="JSON summary (default on a GPU: benchmarks/results/<date>_<device>.json)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(
            json.dumps(
                {"error": "no CUDA device: the GPU check needs one (use a GPU machine, or --device cpu)"}
            )
        )
        return 2
    name = "tiny" if args.tiny else "quick" if args.quick else "1.5b"
    shape = {k: getattr(args, k) if getattr(args, k) is not None else v for k, v in SHAPES[name].items()}
    dev = Device(args.device, args.peak_tflops)
    if dev.cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
    packed_attn = args.packed_attn
    if packed_attn == "auto":
        packed_attn = "flash_attention_2" if dev.cuda and versions()["flash_attn"] else args.attn
    out = Path(args.out) if args.out else None
    if out is None and dev.cuda:
        slug = re.sub(r"[^A-Za-z0-9]+", "-", dev.label).strip("-")
        out = ROOT / "benchmarks" / "results" / f"{datetime.date.today().isoformat()}_{slug}.json"
    summary: dict[str, Any] = {"device": dev.label, "gpu_result": dev.cuda, "preset": name, "shape": shape,
                               "peak_tflops": dev.peak_tflops, "versions": versions(), "rows": {}}  # fmt: skip
    if not dev.cuda:
        summary["note"] = "CPU timings: they test the code path and are no GPU result; no target is judged"

    def write() -> None:
        text = json.dumps(summary, indent=1)
        if out is not None:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(text + "\n")

    start = time.perf_counter()
    tok = build_tokenizer(shape["vocab"])
    data = {"fixed": make_examples(tok, shape["examples"], shape["seq"])}
    data["mix"] = make_examples(
        tok, 0, shape["seq"], seed=1, lengths=length_mix(shape["examples"], shape["seq"])
    )
    summary["mix_lengths"] = {"min": min(len(e.input_ids) for e in data["mix"]),
                              "mean": round(sum(len(e.input_ids) for e in data["mix"]) / len(data["mix"]), 1),
                              "max": max(len(e.input_ids) for e in data["mix"])}  # fmt: skip
    summary["head"] = check_head(shape, dev)  # seconds; first, so that every write has its ratio
    for row in [r.strip() for r in args.rows.split(",") if r.strip()]:
        try:
            summary["rows"][row] = run_row(row, tok, data, shape, dev, args.attn, packed_attn)
        except Exception as err:  # one failing row (e.g. out of memory) must not lose the others
            summary["rows"][row] = {"error": f"{type(err).__name__}: {err}"[:800]}
            dev.reset()
        print(f"{row}: {json.dumps(summary['rows'][row])}", file=sys.stderr, flush=True)
        summary["ratios"] = ratios(summary["rows"], summary["head"])
        summary["targets"] = judge(summary["ratios"], dev.cuda)
        summary["wall_s"] = round(time.perf_counter() - start, 1)
        write()  # a run cut short (timeout) keeps every finished row, its ratios and targets
    if dev.cuda and not args.no_eval:
        summary["eval"] = check_eval(tok, shape, dev, args.gen_tokens, args.no_vllm)
    summary["wall_s"] = round(time.perf_counter() - start, 1)
    write()
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
