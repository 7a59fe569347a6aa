"""A tiny offline world for the walking skeleton: word-level tokenizer, tiny Qwen2, arithmetic demos.

Nothing here touches the network. The world is deliberately small and replaceable (the full small world the
paper's findings are studied on is a separate piece of work): multi-term addition problems whose
demonstrations are step-by-step chains, some steps followed by a reflective aside ("wait , let me check"),
the kind of token §5.1 of the paper finds clipped.

Outputs of :func:`build_world` (``out`` = ``results/world/<profile>``, data in ``results/data/<profile>``)::

    data/train.jsonl, data/eval.jsonl, data/card.md     the demonstrations (committed for mini)
    data/rl.jsonl                                        RL prompts with verifiable answers (GRPO)
    data/prefs.jsonl                                     preference pairs: chosen correct, rejected wrong/unboxed
    world/tokenizer/                                     PreTrainedTokenizerFast with a chat template
    world/base/                                          the base model (Qwen2ForCausalLM) + tokenizer
"""

from __future__ import annotations

import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from psftlib.data import atomic_write, write_jsonl

PAD, UNK, IM_START, IM_END = "<|endoftext|>", "<|unk|>", "<|im_start|>", "<|im_end|>"
SPECIAL_TOKENS = [PAD, UNK, IM_START, IM_END]
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SYSTEM_PROMPT = "please reason step by step , and put your final answer within \\boxed{ } ."
REFLECTIONS = ["wait , let me check :", "let me verify :", "alternatively , recompute :"]


def make_problem(rng: random.Random, world: dict[str, Any]) -> dict[str, Any]:
    n_terms = rng.randint(world["min_terms"], world["max_terms"])
    terms = [rng.randint(0, world["max_operand"]) for _ in range(n_terms)]
    prompt = "compute " + " + ".join(map(str, terms))
    steps, total = [], terms[0]
    for t in terms[1:]:
        new = total + t
        steps.append(f"{total} + {t} = {new} .")
        if rng.random() < world.get("reflect_prob", 0.0):
            steps.append(f"{rng.choice(REFLECTIONS)} {total} + {t} = {new} .")
        total = new
    response = " ".join([*steps, f"so the answer is \\boxed{{ {total} }}"])
    return {"system": SYSTEM_PROMPT, "prompt": prompt, "response": response, "answer": str(total)}


def make_dataset(world: dict[str, Any], seed: int) -> dict[str, list[dict]]:
    """Train, eval, RL-prompt and preference problems, pairwise disjoint by prompt, deterministic in ``seed``."""
    rng = random.Random(seed)
    seen: set[str] = set()
    rows: list[dict] = []
    sizes = {"train": world["n_train"], "eval": world["n_eval"], "rl": world.get("n_rl", 0),
             "prefs": world.get("n_pref", 0)}  # fmt: skip
    want = sum(sizes.values())
    attempts = 0
    while len(rows) < want:
        attempts += 1
        if attempts > 100 * want:
            raise ValueError(f"world: cannot draw {want} distinct problems; raise max_operand or max_terms")
        row = make_problem(rng, world)
        if row["prompt"] in seen:
            continue
        seen.add(row["prompt"])
        row["id"] = f"arith-{len(rows):05d}"
        rows.append(row)
    out, start = {}, 0
    for name, n in sizes.items():
        out[name] = rows[start : start + n]
        start += n
    out["rl"] = [{k: r[k] for k in ("id", "system", "prompt", "answer")} for r in out["rl"]]
    out["prefs"] = [preference_pair(r, rng) for r in out["prefs"]]
    return out


def preference_pair(row: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """chosen = the correct, well-formed demonstration; rejected = a wrong final answer or no boxed answer."""
    total = int(row["answer"])
    if rng.random() < 0.5:
        wrong = total + rng.choice([1, 2, 3] if total < 3 else [-3, -2, -1, 1, 2, 3])
        rejected = row["response"].replace(f"\\boxed{{ {total} }}", f"\\boxed{{ {wrong} }}")
        kind = "wrong_answer"
    else:
        rejected = row["response"].replace(f"\\boxed{{ {total} }}", f"{total}")
        kind = "no_box"
    return {"id": row["id"], "system": row["system"], "prompt": row["prompt"], "chosen": row["response"],
            "rejected": rejected, "answer": row["answer"], "rejected_kind": kind}  # fmt: skip


def build_tokenizer(world: dict[str, Any], corpus: list[str]) -> Any:
    """Word-level tokenizer (``tokenizers``) wrapped as ``PreTrainedTokenizerFast`` with a chat template.

    Every number that can appear (up to ``max_terms * max_operand``) is in the vocabulary, so eval problems
    never hit ``<|unk|>``.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    numbers = [str(i) for i in range(world["max_terms"] * world["max_operand"] + 4)]  # + wrong answers
    words = [*corpus, " ".join(numbers), "system user assistant so the answer is \\boxed{ }", " ".join(REFLECTIONS),
             SYSTEM_PROMPT]  # fmt: skip
    tok = Tokenizer(models.WordLevel(unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.train_from_iterator(words, trainers.WordLevelTrainer(special_tokens=SPECIAL_TOKENS, min_frequency=1))
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
        raise FileNotFoundError(f"{path}: no tokenizer.json (build the world first)")
    return PreTrainedTokenizerFast.from_pretrained(str(path))


def check_checkpoint(path: str | Path) -> Path:
    """A folder that holds a Hugging Face model, else a clear error naming it."""
    path = Path(path)
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"{path}: not a Hugging Face checkpoint folder (no config.json)")
    return path


def load_checkpoint(path: str | Path) -> tuple[Any, Any]:
    """(model in fp32, the project's tokenizer) of a saved checkpoint, generation ending at our EOS."""
    from transformers import AutoModelForCausalLM

    path = check_checkpoint(path)
    tokenizer = load_tokenizer(path)
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32)
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


def save_pretrained_atomic(model: Any, tokenizer: Any, out: str | Path) -> None:
    """``save_pretrained`` into a temp folder beside ``out``, then swap it in."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        model.save_pretrained(tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_card(path: Path, world: dict[str, Any], train: list[dict], eval_: list[dict], vocab: int) -> None:
    reflect = sum(r["response"].count(":") for r in train)
    with atomic_write(path) as f:
        f.write(
            "# Data card: tiny_arith (walking-skeleton world)\n\n"
            "Multi-term addition; each demonstration is a chain of partial sums, some followed by a reflective\n"
            "aside (`wait , let me check :` ...), then `so the answer is \\boxed{ N }` and EOS. Generated offline by\n"
            "`psftlib.world`, deterministic in the profile's seed. Train and eval prompts are disjoint.\n\n"
            f"- train records: {len(train)}\n- eval records: {len(eval_)}\n- vocabulary: {vocab} words\n"
            f"- RL prompts: {world.get('n_rl', 0)}; preference pairs: {world.get('n_pref', 0)} (rejected: a wrong boxed\n"
            "  answer or no box at all, half each)\n"
            f"- terms per problem: {world['min_terms']}..{world['max_terms']}, operands 0..{world['max_operand']}\n"
            f"- reflective asides in train: {reflect}\n"
        )


def build_world(profile: dict[str, Any], data_dir: str | Path, world_dir: str | Path) -> None:
    """Write the data, the tokenizer and the base model of ``profile`` (see module docstring)."""
    data_dir, world_dir = Path(data_dir), Path(world_dir)
    world = profile["world"]
    sets = make_dataset(world, profile["seed"])
    train, eval_ = sets["train"], sets["eval"]
    corpus = [f"{r['prompt']} {r['response']}" for r in train + eval_]
    corpus += [r["prompt"] for r in sets["rl"]] + [f"{r['prompt']} {r['chosen']}" for r in sets["prefs"]]
    tokenizer = build_tokenizer(world, corpus)
    model = build_model(profile["model"], tokenizer, profile["seed"])
    write_jsonl(data_dir / "train.jsonl", train)
    write_jsonl(data_dir / "eval.jsonl", eval_)
    write_jsonl(data_dir / "rl.jsonl", sets["rl"] or [])
    write_jsonl(data_dir / "prefs.jsonl", sets["prefs"] or [])
    write_card(data_dir / "card.md", world, train, eval_, len(tokenizer))
    save_pretrained_atomic(model, tokenizer, world_dir / "base")
