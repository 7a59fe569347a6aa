"""Building the small world offline: data splits, a word-level tokenizer, and a pretrained tiny base model.

Nothing here touches the network. The generators are ``psftlib.worlds.small``; the pretraining loop is
``psftlib.worlds.pretrain``. Outputs of :func:`build_world` (data in ``results/data/<profile>``, model in
``results/world/<profile>``)::

    data/<split>.jsonl, data/card.md       pretrain, train, heldout, eval_target_<n>, eval_<skill>, eval_format,
                                           rl (GRPO prompts), prefs (DPO pairs); the data card
    world/base/                            the base model (Qwen2ForCausalLM) + tokenizer (chat template)
    world/pretrain_metrics.jsonl           its pretraining curve
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from psftlib.data import (
    DEFAULT_MAX_UNK_RATE,
    TEXT_FIELDS,
    DataError,
    atomic_write,
    encode_all,
    read_json,
    text_token_ids,
    unknown_tokens,
    write_jsonl,
)
from psftlib.worlds.pretrain import PretrainConfig, pretrain
from psftlib.worlds.small import make_datasets, vocabulary_corpus

# tokenizers / transformers are imported where they are used: the figure notebooks import psftlib modules that
# reach this one only for its constants, and transformers costs seconds to import

PAD, UNK, IM_START, IM_END = "<|endoftext|>", "<|unk|>", "<|im_start|>", "<|im_end|>"
SPECIAL_TOKENS = [PAD, UNK, IM_START, IM_END]
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def build_tokenizer(corpus: list[str]) -> Any:
    """Word-level tokenizer (``tokenizers``) wrapped as ``PreTrainedTokenizerFast`` with a chat template.

    ``corpus`` must hold every word the world can emit (``smallworld.vocabulary_corpus``), so no text ever maps
    to ``<|unk|>``; reflective words, digits and operators are single tokens.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.train_from_iterator(corpus, trainers.WordLevelTrainer(special_tokens=SPECIAL_TOKENS, min_frequency=1))
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token=UNK, pad_token=PAD, eos_token=IM_END, model_max_length=4096
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def load_tokenizer(path: str | Path) -> Any:
    """Load the project's tokenizer. Not ``AutoTokenizer``: that maps a qwen2 folder to ``Qwen2Tokenizer``."""
    from transformers import PreTrainedTokenizerFast

    path = Path(path)
    if not (path / "tokenizer.json").exists():
        raise FileNotFoundError(
            f"{path}: no tokenizer.json; expected a checkpoint folder with its tokenizer (the base model: build "
            "the world first)"
        )
    try:
        return PreTrainedTokenizerFast.from_pretrained(str(path))
    except Exception as err:  # transformers / tokenizers errors do not name the file
        _unreadable(
            path, ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"), "tokenizer", err
        )


def check_checkpoint(path: str | Path) -> Path:
    """A folder that holds a Hugging Face model, else a clear error naming it."""
    path = Path(path)
    if (path / "checkpoint" / "config.json").exists() and not (path / "tokenizer.json").exists():
        raise FileNotFoundError(
            f"{path}: not a Hugging Face checkpoint folder but a run folder; its checkpoint is {path / 'checkpoint'}"
        )
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"{path}: not a Hugging Face checkpoint folder (no config.json)")
    if "model_type" not in read_json(path / "config.json", "a Hugging Face model config"):
        raise DataError(f"{path / 'config.json'}: no model_type; not a Hugging Face checkpoint folder")
    return path


def _unreadable(folder: Path, names: tuple[str, ...], what: str, err: Exception) -> None:
    """Raise :class:`DataError` naming the file of ``folder`` that broke loading ``what``: the first of ``names``
    that is not valid JSON (file and line), else the folder with the loader's own message."""
    for name in names:
        if name.endswith(".json") and (folder / name).exists():
            read_json(folder / name, f"the checkpoint's {name}")
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    raise DataError(f"{folder}: the {what} ({', '.join(names)}) cannot be loaded: {first}") from err


def load_checkpoint(path: str | Path) -> tuple[Any, Any]:
    """(model in fp32, the project's tokenizer) of a saved checkpoint, generation ending at our EOS. A vision-language
    checkpoint (a ``vision_config``: the paper's Qwen2.5-VL runs) loads whole, as the image-text model it is."""
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

    path = check_checkpoint(path)
    tokenizer = load_tokenizer(path)
    vlm = "vision_config" in read_json(path / "config.json", "a Hugging Face model config")
    try:
        auto = AutoModelForImageTextToText if vlm else AutoModelForCausalLM
        model = auto.from_pretrained(str(path), dtype=torch.float32)
    except Exception as err:  # e.g. a truncated model.safetensors: safetensors' error does not name the file
        weights = tuple(sorted(p.name for p in path.glob("*.safetensors"))) or ("model weights",)
        _unreadable(path, ("config.json", "generation_config.json", *weights), "model", err)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def build_model(model_cfg: dict[str, Any], tokenizer: Any, seed: int) -> torch.nn.Module:
    """A tiny ``Qwen2ForCausalLM`` from config, randomly initialised with ``seed``."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=model_cfg["hidden_size"],
        intermediate_size=model_cfg["intermediate_size"],
        num_hidden_layers=model_cfg["num_hidden_layers"],
        num_attention_heads=model_cfg["num_attention_heads"],
        num_key_value_heads=model_cfg["num_key_value_heads"],
        max_position_embeddings=model_cfg.get("max_position_embeddings", 512),
        tie_word_embeddings=True,
        attention_dropout=0.0,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
    )
    torch.manual_seed(seed)
    return Qwen2ForCausalLM(config).float()


def save_pretrained_atomic(
    model: Any, tokenizer: Any, out: str | Path, state_dict: dict | None = None
) -> None:
    """``save_pretrained`` (of ``state_dict`` if given: a sharded model's gathered weights) into a temp folder beside
    ``out``, then swap it in."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        model.save_pretrained(tmp, **({"state_dict": state_dict} if state_dict is not None else {}))
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_card(
    path: Path, profile: dict[str, Any], sets: dict[str, list[dict]], tokenizer: Any, n_params: int
) -> None:
    """The data card: what the world is, how many of each split, the share of each split's tokens that the tokenizer
    cannot spell (its unknown token), the seed (no wall-clock: results stay identical)."""
    world, pre = profile["world"], profile["pretrain"]
    vocab = len(tokenizer)

    def count_and_unknown(rows: list[dict]) -> str:
        n_unk, n_tokens, _ = unknown_tokens(tokenizer, text_token_ids(tokenizer, rows))
        return f"{len(rows)} | {n_unk} of {n_tokens} ({n_unk / max(n_tokens, 1):.2%})"

    count = {name: count_and_unknown(rows) for name, rows in sets.items()}
    aside_words = ("wait", "alternatively", "hmm", "verify", "recheck")

    def reflective_share(rows: list[dict]) -> float:
        words = [w for r in rows for w in r["response"].split()]
        return sum(w in aside_words for w in words) / max(1, len(words))

    target_pre = [r for r in sets["pretrain"] if r["skill"] == "target"]
    lines = [
        "# Data card: the small world",
        "",
        f"Generated offline by `psftlib.worlds.small.make_datasets` with seed {profile['seed']} (profile "
        f"`{profile['profile']}`); same seed, byte-identical JSONL. Every split is disjoint from every other by "
        "prompt, except that `eval_arith` asks a sample of the arithmetic facts the base model is taught (facts are "
        "knowledge, like a knowledge benchmark; the other skills are algorithms, evaluated on unseen inputs).",
        "",
        "| split | records | unknown tokens | what |",
        "|---|---|---|---|",
        f"| pretrain | {count['pretrain']} | base corpus: five skills, format instructions, one-step chains |",
        f"| train | {count['train']} | target demonstrations, {world['levels']} terms, asides at {world['aside_prob']} |",
        f"| heldout | {count['heldout']} | more demonstrations of the same kind, never trained on (held-out NLL) |",
        *(f"| {k} | {v} | {'in-domain eval (graded by terms)' if 'target' in k else 'out-of-domain eval'} |"
          for k, v in count.items() if k.startswith("eval_")),
        f"| rl | {count['rl']} | target prompts with answers (GRPO) |",
        f"| prefs | {count['prefs']} | preference pairs: format and target prompts; rejected = wrong or unformatted |",
        "",
        f"Unknown tokens: tokens of every text field ({', '.join(TEXT_FIELDS)}) that the tokenizer maps to `{UNK}` "
        "(words outside its vocabulary, which a run would train on as unknown); a dataset above "
        f"{DEFAULT_MAX_UNK_RATE:.1%} is refused before training (`psftlib.data.check_unknown_rate`).",
        "",
        f"- numbers: sort, compare and arithmetic results in 0..{world['max_value']}, operands "
        f"1..{world['max_operand']}; the vocabulary holds 0..99",
        f"- reflective-word share of response words: pretraining one-step chains {reflective_share(target_pre):.3f}, "
        f"train demonstrations {reflective_share(sets['train']):.3f}",
        f"- vocabulary: {vocab} words (word-level; every number 0..99 and every reflective word is one token)",
        f"- base model: Qwen2ForCausalLM, {n_params / 1e6:.2f}M parameters ({profile['model']}), pretrained "
        f"{pre['epochs']} epochs on `pretrain` (batch {pre['batch_size']}, lr {pre['lr']}); its skills and target "
        "score: `results/tables/world_calibration.md`",
        "",
    ]  # fmt: skip
    with atomic_write(path) as f:
        f.write("\n".join(lines))


def build_world(
    profile: dict[str, Any], data_dir: str | Path, world_dir: str | Path, progress: bool = True
) -> None:
    """Write the data, the tokenizer and the pretrained base model of ``profile`` (see module docstring)."""
    data_dir, world_dir = Path(data_dir), Path(world_dir)
    sets = make_datasets(profile["world"], profile["seed"])
    tokenizer = build_tokenizer(vocabulary_corpus())
    model = build_model(profile["model"], tokenizer, profile["seed"])
    settings = {
        k: v for k, v in profile["pretrain"].items() if k != "threads"
    }  # threads: the job's, not the maths
    cfg = PretrainConfig.from_dict({"seed": profile["seed"], **settings})
    examples, _ = encode_all(tokenizer, sets["pretrain"])
    history = pretrain(model, examples, tokenizer.pad_token_id, cfg, progress=progress)
    for name, rows in sets.items():
        write_jsonl(data_dir / f"{name}.jsonl", rows)
    write_card(data_dir / "card.md", profile, sets, tokenizer, sum(p.numel() for p in model.parameters()))
    write_jsonl(world_dir / "pretrain_metrics.jsonl", history)
    save_pretrained_atomic(model, tokenizer, world_dir / "base")
