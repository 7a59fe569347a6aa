"""The paper's datasets, by public id, with its filters, mapped to our record schemas (the ``paper`` profile).

Each loader takes a Hugging Face hub dataset id (read with ``datasets.load_dataset``, imported only then) or a
local JSONL / JSON / Parquet file with the same columns as the hub dataset, and returns :class:`Loaded`: the
records and what was dropped and why (for the data card). Records::

    SFT          {"id", "system", "prompt", "response", "answer"}        (psftlib.data.read_jsonl reads these)
    RL prompts   {"id", "system", "prompt", "answer"} (+ "images" for Geometry3K)
    preferences  {"id", "system", "prompt", "chosen", "rejected"}

System prompts are the paper's App. C.8: reasoning tasks ``Please reason step by step, and put your final answer
within \\boxed{}.``; alignment ``You are a helpful assistant.``

=========================  ===========================================  =========================================
loader                     hub dataset (paper)                          filter
=========================  ===========================================  =========================================
``openr1_math``            open-r1/OpenR1-Math-220k (§4.1, §4.4)        a math-verify-correct, complete trace;
                                                                        system + prompt + response <= max_tokens
                                                                        (8,192 main / 4,096 VLM)
``dapo_math``              BytedTsinghua-SIA/DAPO-Math-17k (§4.2)       DAPO's "Answer:" wrapper removed (we ask
                                                                        for \\boxed{}); duplicate prompts dropped
``ultrafeedback_sft``      HuggingFaceH4/ultrafeedback_binarized (§4.3) the chosen response; <= max_tokens
``ultrafeedback_prefs``    same                                         chosen/rejected pairs; ties and empty
                                                                        responses dropped; <= max_tokens
``geometry3k``             hiyouga/geometry3k (§4.4)                    images kept (PIL, bytes or paths)
``openr1_code``            open-r1/codeforces-cots (App. C.6)           finished ("stop") traces, < 8,192 tokens
=========================  ===========================================  =========================================

Token lengths are counted with the model's tokenizer (:func:`token_counter`) on the raw texts, without the chat
template's few extra tokens. Errors name the source (file or hub id), the row and the field.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from psftlib.config import load_profile
from psftlib.worlds.rows import (  # noqa: F401 - read_table, LoaderError, ... are part of this module's interface
    # transformers is imported only to count tokens with a hub tokenizer (seconds to import)
    LOCAL_SUFFIXES,
    Loaded,
    LoaderError,
    TokenCounter,
    _done,
    _field,
    _Filter,
    _message_content,
    _rows,
    is_local,
    load_rows,
    read_table,
    token_counter,
    write_records,
)

REASONING_SYSTEM_PROMPT = (
    "Please reason step by step, and put your final answer within \\boxed{}."  # App. C.8
)
ALIGNMENT_SYSTEM_PROMPT = "You are a helpful assistant."  # App. C.8


def openr1_math(
    source: str | Path = "open-r1/OpenR1-Math-220k",
    *,
    config: str | None = "default",
    split: str = "train",
    max_tokens: int | None = 8192,
    count_tokens: TokenCounter | None = None,
    system_prompt: str = REASONING_SYSTEM_PROMPT,
    limit: int | None = None,
) -> Loaded:
    """OpenR1-Math long-CoT demonstrations (SFT records), length-filtered (paper: 8,192 §4.1; 4,096 §4.4).

    The demonstration is the assistant turn of ``messages`` (the trace open-r1 itself trains on); without one,
    the first generation that math-verify marks correct (``correctness_math_verify``) and that finished
    (``is_reasoning_complete``, when present). Problems with no such trace are dropped.
    """
    source = str(source)
    rows = load_rows(source, config, split)
    flt = _Filter(max_tokens, count_tokens, source)
    out = []
    for i, row in _rows(rows, source):
        problem = _field(row, "problem", source, i)
        response = _message_content(row.get("messages"), "assistant", source, i, "messages")
        if not response:
            gens = row.get("generations") or []
            ok = row.get("correctness_math_verify") or []
            complete = row.get("is_reasoning_complete") or [True] * len(gens)
            if not isinstance(gens, list) or not isinstance(ok, list):
                raise LoaderError(
                    f"{source}: row {i}: 'generations' / 'correctness_math_verify' must be lists"
                )
            response = next(
                (g for g, c, d in zip(gens, ok, complete, strict=False) if c and d and isinstance(g, str)),
                None,
            )
        if not response:
            flt.drop("no correct complete trace")
            continue
        if not flt.fits(system_prompt, problem, response):
            continue
        answer = row.get("answer")
        out.append({"id": str(row.get("uuid") or f"openr1-math-{i}"), "system": system_prompt, "prompt": problem,
                    "response": response, "answer": None if answer is None else str(answer)})  # fmt: skip
    return _done(out, source, len(rows), flt, limit)


DAPO_PREFIX = (
    "Solve the following math problem step by step. The last line of your response should be of the form "
    "Answer: $Answer (without quotes) where $Answer is the answer to the problem.\n\n"
)
DAPO_SUFFIX = '\n\nRemember to put your answer on its own line after "Answer:".'


def dapo_math(
    source: str | Path = "BytedTsinghua-SIA/DAPO-Math-17k",
    *,
    config: str | None = None,
    split: str = "train",
    system_prompt: str = REASONING_SYSTEM_PROMPT,
    strip_instruction: bool = True,
    limit: int | None = None,
) -> Loaded:
    """DAPO-Math-17k RL prompts with ``reward_model.ground_truth`` answers (GRPO, §4.2).

    The hub prompt wraps each problem in DAPO's "Answer: $Answer" instruction; with ``strip_instruction`` it is
    removed, since the paper's system prompt (App. C.8) asks for ``\\boxed{}`` and our reward reads the last box.
    The hub file repeats each prompt many times: duplicates are dropped.
    """
    source = str(source)
    rows = load_rows(source, config, split)
    flt = _Filter(None, None, source)
    seen: set[str] = set()
    out = []
    for i, row in _rows(rows, source):
        content = _message_content(_field(row, "prompt", source, i, list), "user", source, i, "prompt")
        if not content:
            raise LoaderError(f"{source}: row {i}: field 'prompt' has no user message")
        reward = _field(row, "reward_model", source, i, dict)
        if reward.get("ground_truth") in (None, ""):
            raise LoaderError(f"{source}: row {i}: field 'reward_model.ground_truth' is missing or empty")
        problem = content
        if strip_instruction:
            problem = problem.removeprefix(DAPO_PREFIX).removesuffix(DAPO_SUFFIX).strip()
        if problem in seen:
            flt.drop("duplicate prompt")
            continue
        seen.add(problem)
        index = (row.get("extra_info") or {}).get("index")
        out.append({"id": str(index if index is not None else f"dapo-{i}"), "system": system_prompt,
                    "prompt": problem, "answer": str(reward["ground_truth"])})  # fmt: skip
    return _done(out, source, len(rows), flt, limit)


def _ultrafeedback_turns(row: dict, source: str, i: int) -> tuple[str, str, str]:
    prompt = _field(row, "prompt", source, i)
    chosen = _message_content(_field(row, "chosen", source, i, list), "assistant", source, i, "chosen")
    rejected = _message_content(_field(row, "rejected", source, i, list), "assistant", source, i, "rejected")
    return prompt, chosen or "", rejected or ""


def ultrafeedback_sft(
    source: str | Path = "HuggingFaceH4/ultrafeedback_binarized",
    *,
    config: str | None = None,
    split: str = "train_prefs",
    max_tokens: int | None = 6144,
    count_tokens: TokenCounter | None = None,
    system_prompt: str = ALIGNMENT_SYSTEM_PROMPT,
    limit: int | None = None,
) -> Loaded:
    """UltraFeedback's chosen responses as SFT records (§4.3: "the chosen region of the dataset")."""
    source = str(source)
    rows = load_rows(source, config, split)
    flt = _Filter(max_tokens, count_tokens, source)
    out = []
    for i, row in _rows(rows, source):
        prompt, chosen, _ = _ultrafeedback_turns(row, source, i)
        if not chosen.strip():
            flt.drop("empty chosen response")
            continue
        if not flt.fits(system_prompt, prompt, chosen):
            continue
        out.append({"id": str(row.get("prompt_id") or f"ultrafeedback-{i}"), "system": system_prompt,
                    "prompt": prompt, "response": chosen, "answer": None})  # fmt: skip
    return _done(out, source, len(rows), flt, limit)


def ultrafeedback_prefs(
    source: str | Path = "HuggingFaceH4/ultrafeedback_binarized",
    *,
    config: str | None = None,
    split: str = "train_prefs",
    max_tokens: int | None = 4096,
    count_tokens: TokenCounter | None = None,
    system_prompt: str = ALIGNMENT_SYSTEM_PROMPT,
    limit: int | None = None,
) -> Loaded:
    """UltraFeedback preference pairs for DPO (§4.3, Table 14 cutoff 4k): ties and empty responses dropped."""
    source = str(source)
    rows = load_rows(source, config, split)
    flt = _Filter(max_tokens, count_tokens, source)
    out = []
    for i, row in _rows(rows, source):
        prompt, chosen, rejected = _ultrafeedback_turns(row, source, i)
        if not chosen.strip() or not rejected.strip():
            flt.drop("empty response")
            continue
        sc, sr = row.get("score_chosen"), row.get("score_rejected")
        if sc is not None and sr is not None and sc == sr:
            flt.drop("tie")
            continue
        longer = chosen if len(chosen) >= len(rejected) else rejected
        if not flt.fits(system_prompt, prompt, longer):
            continue
        out.append({"id": str(row.get("prompt_id") or f"ultrafeedback-{i}"), "system": system_prompt,
                    "prompt": prompt, "chosen": chosen, "rejected": rejected})  # fmt: skip
    return _done(out, source, len(rows), flt, limit)


def _image(value: Any, base: Path | None, source: str, i: int) -> Any:
    """A PIL image, a ``{"bytes", "path"}`` dict (Parquet / datasets Image) or a path (resolved next to the file)."""
    if hasattr(value, "size") and hasattr(value, "mode"):  # PIL.Image.Image
        return value
    if isinstance(value, dict) and (value.get("bytes") or value.get("path")):
        if value.get("bytes"):
            return value
        value = value["path"]
    if isinstance(value, str):
        p = Path(value)
        if not p.is_absolute() and base is not None:
            p = base / p
        if not p.exists():
            raise LoaderError(f"{source}: row {i}: field 'images': no such image file {p}")
        return str(p)
    raise LoaderError(
        f"{source}: row {i}: field 'images' holds {type(value).__name__}, not an image/bytes/path"
    )


def geometry3k(
    source: str | Path = "hiyouga/geometry3k",
    *,
    config: str | None = None,
    split: str = "train",
    system_prompt: str = REASONING_SYSTEM_PROMPT,
    limit: int | None = None,
) -> Loaded:
    """Geometry3K text-image RL prompts (§4.4): ``problem`` (with its ``<image>`` placeholder), ``answer``, images."""
    source = str(source)
    rows = load_rows(source, config, split)
    base = Path(source).parent if is_local(source) else None
    flt = _Filter(None, None, source)
    out = []
    for i, row in _rows(rows, source):
        problem = _field(row, "problem", source, i)
        answer = _field(row, "answer", source, i, (str, int, float))
        images = [_image(im, base, source, i) for im in _field(row, "images", source, i, list)]
        out.append({"id": str(row.get("id", f"geometry3k-{i}")), "system": system_prompt, "prompt": problem,
                    "answer": str(answer), "images": images})  # fmt: skip
    return _done(out, source, len(rows), flt, limit)


def openr1_code(
    source: str | Path = "open-r1/codeforces-cots",
    *,
    config: str | None = "solutions_py",
    split: str = "train",
    max_tokens: int | None = 8191,
    count_tokens: TokenCounter | None = None,
    system_prompt: str = REASONING_SYSTEM_PROMPT,
    limit: int | None = None,
) -> Loaded:
    """OpenR1 code traces as SFT records (App. C.6: "lengths less than 8192", ~13k examples).

    The prompt is the user turn of ``messages`` (else ``prompt``), the response the assistant turn (else
    ``generation``); traces that did not finish (``finish_reason`` other than ``stop``) are dropped.
    """
    source = str(source)
    rows = load_rows(source, config, split)
    flt = _Filter(max_tokens, count_tokens, source)
    out = []
    for i, row in _rows(rows, source):
        messages = row.get("messages")
        prompt = _message_content(messages, "user", source, i, "messages") or _field(row, "prompt", source, i)
        response = _message_content(messages, "assistant", source, i, "messages") or row.get("generation")
        if not response:
            raise LoaderError(f"{source}: row {i}: neither 'messages' nor 'generation' holds a response")
        if row.get("finish_reason") not in (None, "stop"):
            flt.drop(f"finish_reason {row.get('finish_reason')}")
            continue
        if not flt.fits(system_prompt, prompt, response):
            continue
        out.append({"id": f"{row.get('id', 'code')}-{i}", "system": system_prompt, "prompt": prompt,
                    "response": response, "answer": None})  # fmt: skip
    return _done(out, source, len(rows), flt, limit)


LOADERS: dict[str, Callable[..., Loaded]] = {
    "openr1_math": openr1_math,
    "dapo_math": dapo_math,
    "ultrafeedback_sft": ultrafeedback_sft,
    "ultrafeedback_prefs": ultrafeedback_prefs,
    "geometry3k": geometry3k,
    "openr1_code": openr1_code,
}
TOKEN_FILTERED = {"openr1_math", "ultrafeedback_sft", "ultrafeedback_prefs", "openr1_code"}


def load_dataset_spec(
    spec: dict[str, Any],
    system_prompts: dict[str, str],
    count_tokens: TokenCounter | None = None,
    source: str | Path | None = None,
) -> Loaded:
    """Load one entry of a profile's ``paper.datasets`` (``source``: a local file used instead of ``spec["id"]``)."""
    loader = spec["loader"]
    if loader not in LOADERS:
        raise LoaderError(f"paper.datasets: loader {loader!r} is not one of {sorted(LOADERS)}")
    kwargs: dict[str, Any] = {"split": spec.get("split", "train"), "limit": spec.get("limit")}
    if "config" in spec:
        kwargs["config"] = spec["config"]
    if spec.get("system_prompt"):
        kwargs["system_prompt"] = system_prompts[spec["system_prompt"]]
    if loader in TOKEN_FILTERED:
        kwargs["max_tokens"] = spec.get("max_tokens")
        kwargs["count_tokens"] = count_tokens
    return LOADERS[loader](source or spec["id"], **kwargs)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Load one of a profile's paper.datasets into our JSONL schema."
    )
    parser.add_argument(
        "--profile", default="paper", help="profile name or YAML path (needs a paper: section)"
    )
    parser.add_argument("--dataset", required=True, help="a name under paper.datasets")
    parser.add_argument("--out", required=True, help="output JSONL")
    parser.add_argument("--source", default=None, help="a local JSONL/Parquet file of the hub schema instead")
    args = parser.parse_args(argv)

    prof = load_profile(args.profile)
    paper = prof.data.get("paper") or {}
    if args.dataset not in paper.get("datasets", {}):
        raise LoaderError(f"{prof.path}: paper.datasets.{args.dataset}: no such dataset")
    spec = paper["datasets"][args.dataset]
    counter = None
    if spec.get("max_tokens") and spec["loader"] in TOKEN_FILTERED:
        from transformers import AutoTokenizer

        tok_id = paper["models"].get(spec.get("tokenizer") or "", spec.get("tokenizer"))
        if not tok_id:
            raise LoaderError(f"{prof.path}: paper.datasets.{args.dataset}.tokenizer: needed for max_tokens")
        counter = token_counter(AutoTokenizer.from_pretrained(tok_id))
    loaded = load_dataset_spec(spec, paper["system_prompts"], counter, args.source)
    write_records(args.out, loaded.records)
    print(loaded.summary())


if __name__ == "__main__":
    main()
