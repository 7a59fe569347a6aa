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
import collections
import io
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REASONING_SYSTEM_PROMPT = (
    "Please reason step by step, and put your final answer within \\boxed{}."  # App. C.8
)
ALIGNMENT_SYSTEM_PROMPT = "You are a helpful assistant."  # App. C.8
LOCAL_SUFFIXES = (".jsonl", ".json", ".parquet")

TokenCounter = Callable[[str], int]


class LoaderError(ValueError):
    """A missing file, a malformed row or a missing field; the message names the source, row and field."""


@dataclass
class Loaded:
    """Records in our schema, the source they came from, and how many rows each filter dropped."""

    records: list[dict[str, Any]]
    source: str
    rows_read: int
    dropped: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        drops = ", ".join(f"{k}: {v}" for k, v in sorted(self.dropped.items())) or "none"
        return f"{self.source}: {self.rows_read} rows read, {len(self.records)} kept; dropped ({drops})"


# ---- reading ------------------------------------------------------------------------------------------------


def is_local(source: str | Path) -> bool:
    """A path to a local file (by suffix or existence), as opposed to a hub id like ``org/name``."""
    p = Path(source)
    return p.suffix in LOCAL_SUFFIXES or p.exists()


def read_table(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a local JSONL, JSON (a list of objects) or Parquet file."""
    path = Path(path)
    if not path.exists():
        raise LoaderError(f"{path}: no such file")
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    if path.suffix == ".json":
        try:
            rows = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise LoaderError(f"{path}: not valid JSON ({err.msg})") from None
        if not isinstance(rows, list):
            raise LoaderError(f"{path}: expected a JSON list of objects")
        return rows
    rows = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise LoaderError(f"{path}:{lineno}: not valid JSON ({err.msg})") from None
    return rows


def load_rows(source: str | Path, config: str | None = None, split: str = "train") -> list[dict[str, Any]]:
    """Rows of a local file, or of split ``split`` of hub dataset ``source`` (needs network or the HF cache)."""
    if is_local(source):
        return read_table(source)
    try:
        import datasets
    except ImportError as err:  # pragma: no cover - datasets is in the lock
        raise LoaderError(f"{source}: loading a hub dataset needs the 'datasets' package") from err
    ds = datasets.load_dataset(str(source), config, split=split)
    return [dict(row) for row in ds]


def token_counter(tokenizer: Any) -> TokenCounter:
    """``text -> number of tokens`` for a Hugging Face tokenizer (no special tokens)."""

    def count(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    return count


def _rows(rows: Iterable[dict[str, Any]], source: str) -> Iterable[tuple[int, dict[str, Any]]]:
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise LoaderError(f"{source}: row {i}: expected an object, got {type(row).__name__}")
        yield i, row


def _field(row: dict[str, Any], name: str, source: str, i: int, kind: type | tuple[type, ...] = str) -> Any:
    value = row.get(name)
    if value is None or (isinstance(value, str | list) and len(value) == 0):
        raise LoaderError(f"{source}: row {i}: field {name!r} is missing or empty (columns: {sorted(row)})")
    if not isinstance(value, kind):
        raise LoaderError(
            f"{source}: row {i}: field {name!r} has type {type(value).__name__}, expected {kind}"
        )
    return value


def _message_content(messages: Any, role: str, source: str, i: int, name: str) -> str | None:
    """Content of the last message with ``role`` in a ``[{"role", "content"}]`` list (None if there is none)."""
    if messages is None:
        return None
    if not isinstance(messages, list):
        raise LoaderError(f"{source}: row {i}: field {name!r} must be a list of {{role, content}} messages")
    for m in reversed(messages):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise LoaderError(f"{source}: row {i}: field {name!r} holds a message without role/content")
        if m["role"] == role:
            return m["content"]
    return None


class _Filter:
    """Counts why rows are dropped; checks the token budget."""

    def __init__(self, max_tokens: int | None, count_tokens: TokenCounter | None, source: str):
        if max_tokens is not None and count_tokens is None:
            raise LoaderError(f"{source}: max_tokens={max_tokens} needs a token counter (count_tokens=...)")
        self.max_tokens, self.count, self.dropped = max_tokens, count_tokens, collections.Counter()

    def fits(self, *texts: str) -> bool:
        if self.max_tokens is None:
            return True
        if sum(self.count(t) for t in texts if t) > self.max_tokens:
            self.dropped[f"longer than {self.max_tokens} tokens"] += 1
            return False
        return True

    def drop(self, reason: str) -> None:
        self.dropped[reason] += 1


def _done(records: list[dict], source: str, n: int, flt: _Filter, limit: int | None) -> Loaded:
    if limit is not None:
        records = records[:limit]
    return Loaded(records, source, n, dict(flt.dropped))


# ---- the paper's datasets -----------------------------------------------------------------------------------


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


def write_records(path: str | Path, records: list[dict[str, Any]]) -> None:
    """Write records as JSONL (atomic); images that are not paths are saved as PNGs in ``<path>.images/``."""
    from psftlib.data import write_jsonl

    path = Path(path)
    image_dir = path.with_name(path.name + ".images")

    def as_path(image: Any, name: str) -> str:
        if isinstance(image, str):
            return image
        image_dir.mkdir(parents=True, exist_ok=True)
        target = image_dir / f"{name}.png"
        if isinstance(image, dict):
            target.write_bytes(image["bytes"])
        else:
            buf = io.BytesIO()
            image.save(buf, format="PNG")
            target.write_bytes(buf.getvalue())
        return str(target.relative_to(path.parent))

    def rows() -> Iterable[dict[str, Any]]:
        for r in records:
            if "images" in r:
                r = {**r, "images": [as_path(im, f"{r['id']}-{k}") for k, im in enumerate(r["images"])]}
            yield r

    write_jsonl(path, rows())


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

    from psftlib.config import load_profile

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
