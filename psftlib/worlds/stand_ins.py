"""A tiny hub world: local stand-ins for the paper profile's public models and datasets, so that the real paper
DAG (``rules/hub.smk`` and the shared figure/table rules) runs end to end on CPU, offline, with
``config/paper_tiny.yaml``.

:func:`write_hub` writes, once, into a folder that becomes the DAG's project root (``PSFT_ROOT``), each stand-in
under the hub id the paper uses, so ``from_pretrained("Qwen/Qwen2.5-7B-Instruct")`` and lm-eval's
``load_dataset("Maxwell-Jia/AIME_2024")`` resolve to local folders of that root (a relative path that exists is
read from disk before the hub is asked) and the paper's code paths run unchanged::

    Qwen/Qwen2.5-7B-Instruct/      tiny random-init Qwen2ForCausalLM        + byte-level BPE tokenizer
    meta-llama/Llama-3.1-8B-Instruct/  tiny LlamaForCausalLM                   (one tokenizer for all, trained
    Qwen/Qwen3-4B-Base/            tiny Qwen3ForCausalLM                      here on the fixtures' text)
    Qwen/Qwen2.5-VL-7B-Instruct/   tiny Qwen2_5_VLForConditionalGeneration (a 1-block vision tower)
    Qwen/Qwen3-30B-A3B-Instruct-2507/  tiny Qwen3MoeForCausalLM (4 experts, top 2)
    <training dataset id>/<split>.jsonl   tests/fixtures/paper/* (config/paper_tiny.yaml names these files)
    <eval dataset id>/[<config>.jsonl|<split>.jsonl]  tests/fixtures/paper_<task>.jsonl (+ a README naming a config)

:func:`link_project` adds links to this checkout's code, profiles, notebooks and the paper's numbers, so the folder
is a project root of its own and nothing is written into the checkout's ``results/``::

    python -m psftlib.worlds.stand_ins <folder>
    cd <folder> && PSFT_ROOT=$PWD NLTK_DATA=$PWD/nltk_data snakemake --cores 2 --configfile config/paper_tiny.yaml

Nothing is downloaded: the models are built from config with a fixed seed, the tokenizer is trained on the fixtures.
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
from pathlib import Path
from typing import Any

import torch

from psftlib.worlds.stand_in_images import write_image_datasets
from psftlib.worlds.stand_in_tasks import NLTK_DATA, write_lm_eval_datasets, write_punkt_tab

# this checkout (not psftlib.layout.ROOT: that is the stand-in folder itself once PSFT_ROOT points there)
CHECKOUT = Path(__file__).resolve().parent.parent.parent
FIXTURES = CHECKOUT / "tests" / "fixtures"
SEED = 0
VOCAB = 512  # byte-level BPE: every text encodes (no unknown token), short sequences
SPECIALS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
]
# Qwen's chat template, reduced to plain-text turns (what the loaders, the training data and lm-eval send)
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# The VLM's chat template: Qwen2.5-VL's image slot for each {"type": "image"} content part (what TRL's GRPO sends with
# images), plain-text turns rendered as CHAT_TEMPLATE renders them
VL_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}{{ '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}"
    "{{ '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# the VLM's image processor: 4-16 image tokens per image (28-pixel merged patches)
VL_PIXELS = {"min_pixels": 56 * 56, "max_pixels": 112 * 112}
TINY = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
        "num_key_value_heads": 1, "max_position_embeddings": 4096}  # fmt: skip

# Training datasets: hub id -> (fixture, file name). config/paper_tiny.yaml's paper.datasets.<name>.id is
# "<hub id>/<file name>" (the loaders read a local file of the hub schema; a folder they would not).
TRAIN_DATA = {
    "open-r1/OpenR1-Math-220k": ("paper/openr1_math.jsonl", "train.jsonl"),
    "BytedTsinghua-SIA/DAPO-Math-17k": ("paper/dapo_math.jsonl", "train.jsonl"),
    "HuggingFaceH4/ultrafeedback_binarized": ("paper/ultrafeedback_binarized.jsonl", "train_prefs.jsonl"),
    "hiyouga/geometry3k": ("paper/geometry3k.jsonl", "train.jsonl"),
    "open-r1/codeforces-cots": ("paper/codeforces_cots.jsonl", "train.jsonl"),
}
# The judge's question sets (paper.judge.benchmarks.*.questions): hub id -> (fixture, file name), and the Arena-Hard
# baseline's answers (a stand-in text per question, at the path paper.yaml names)
JUDGE_DATA = {
    "HuggingFaceH4/mt_bench_prompts": ("paper/mt_bench_question.jsonl", "train.jsonl"),
    "tatsu-lab/alpaca_eval": ("paper/alpaca_eval.json", "eval.json"),
    "lmarena-ai/arena-hard-auto-v0.1": ("paper/arena_hard_question.jsonl", "train.jsonl"),
}
ARENA_BASELINE = "data/arena-hard-v0.1/model_answer/gpt-4-0314.jsonl"
# AlpacaEval's length-controlled GLM reads its precomputed df_gamed.csv from the hub: a hand-built one (the judge's
# test fixture) beside the questions, named by paper.judge.benchmarks.alpaca_eval.glm_data
GLM_DATA = ("paper/alpaca_eval_df_gamed.csv", "tatsu-lab/alpaca_eval/df_gamed.csv")
REPEAT = 16  # training fixtures have 2-5 rows: each row 16 times fills a tiny train batch (TRAIN_BATCH)
IMAGES = ("paper/geometry3k_0.png", "paper/geometry3k_1.png")  # beside geometry3k's rows, which name them


def _architectures(vocab: int, specials: dict[str, int]) -> dict[str, Any]:
    """``hub id -> transformers config`` of a tiny model of each architecture the paper trains."""
    from transformers import LlamaConfig, Qwen2Config, Qwen3Config, Qwen3MoeConfig
    from transformers.models.qwen2_5_vl import Qwen2_5_VLConfig

    ids = {
        "pad_token_id": specials["<|endoftext|>"],
        "eos_token_id": specials["<|im_end|>"],
        "bos_token_id": None,
    }
    common = {"vocab_size": vocab, "tie_word_embeddings": True, **TINY, **ids}
    text = {**common, "head_dim": TINY["hidden_size"] // TINY["num_attention_heads"]}
    vision = {"depth": 1, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2, "out_hidden_size": 32,
              "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2, "fullatt_block_indexes": [0]}  # fmt: skip
    vl_text = {**common, "rope_scaling": {"type": "mrope", "mrope_section": [2, 2, 4]}}
    return {
        "Qwen/Qwen2.5-7B-Instruct": Qwen2Config(**common),
        "meta-llama/Llama-3.1-8B-Instruct": LlamaConfig(**common),
        "Qwen/Qwen3-4B-Base": Qwen3Config(**text),
        "Qwen/Qwen2.5-VL-7B-Instruct": Qwen2_5_VLConfig(
            text_config=vl_text,
            vision_config=vision,
            image_token_id=specials["<|image_pad|>"],
            vision_start_token_id=specials["<|vision_start|>"],
            vision_end_token_id=specials["<|vision_end|>"],
            tie_word_embeddings=True,
            **ids,
        ),
        "Qwen/Qwen3-30B-A3B-Instruct-2507": Qwen3MoeConfig(
            **text, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32, decoder_sparse_step=1
        ),
    }


def _texts() -> list[str]:
    """Every string of every fixture (the tokenizer's training text)."""

    def strings(value: Any):
        if isinstance(value, str):
            yield value
        elif isinstance(value, dict):
            for v in value.values():
                yield from strings(v)
        elif isinstance(value, list):
            for v in value:
                yield from strings(v)

    out = []
    for path in sorted(FIXTURES.rglob("*.json*")):
        text = path.read_text()
        rows = [json.loads(line) for line in text.splitlines() if line.strip()] if path.suffix == ".jsonl" else [
            json.loads(text)]  # fmt: skip
        out += [s for row in rows for s in strings(row)]
    return out


def build_tokenizer() -> Any:
    """A byte-level BPE tokenizer (``tokenizers``, trained offline on the fixtures' text) with Qwen's special
    tokens and a chat template, as a ``PreTrainedTokenizerFast`` (pad ``<|endoftext|>``, EOS ``<|im_end|>``)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())  # fmt: skip
    tok.train_from_iterator(_texts(), trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<|endoftext|>", eos_token="<|im_end|>",
                                   model_max_length=TINY["max_position_embeddings"])  # fmt: skip
    fast.chat_template = CHAT_TEMPLATE
    return fast


def write_models(root: Path) -> list[str]:
    """Each architecture's tiny model (seed :data:`SEED`) and the tokenizer under ``root/<hub id>``; returns the ids."""
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText, GenerationConfig

    tokenizer = build_tokenizer()
    specials = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIALS}
    written = []
    for hub_id, config in _architectures(len(tokenizer), specials).items():
        torch.manual_seed(SEED)
        auto = AutoModelForImageTextToText if getattr(config, "vision_config", None) else AutoModelForCausalLM
        model = auto.from_config(config).float()
        model.generation_config = GenerationConfig(
            eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id
        )
        folder = root / hub_id
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        if getattr(config, "vision_config", None):  # its processor: image processing, the VL chat template
            from transformers.models.qwen2_vl import Qwen2VLImageProcessorPil

            Qwen2VLImageProcessorPil(**VL_PIXELS).save_pretrained(folder)
            (folder / "chat_template.jinja").write_text(VL_CHAT_TEMPLATE)
        written.append(hub_id)
    return written


def _eval_tasks() -> dict[str, tuple[str, str | None, str]]:
    """Our paper_* lm-eval tasks: ``task -> (dataset_path, dataset_name, test_split)`` from their YAMLs."""
    import yaml

    out = {}
    for path in sorted((CHECKOUT / "psftlib" / "eval" / "tasks").glob("paper_*.yaml")):
        raw = yaml.load(path.read_text(), Loader=_IgnoreTags)
        out[raw["task"]] = (raw["dataset_path"], raw.get("dataset_name"), raw.get("test_split", "test"))
    return out


class _IgnoreTags(__import__("yaml").SafeLoader):
    """A YAML loader that reads lm-eval's ``!function`` tags as plain strings."""


_IgnoreTags.add_multi_constructor("!", lambda loader, suffix, node: loader.construct_scalar(node))


def _copy(row: dict[str, Any], k: int) -> dict[str, Any]:
    """Copy ``k`` of a training fixture row; a DAPO prompt (deduplicated by its loader) gets a distinct problem."""
    if k == 0 or "reward_model" not in row:
        return row
    from psftlib.worlds.loaders import DAPO_SUFFIX

    turn = row["prompt"][0]
    varied = turn["content"].replace(DAPO_SUFFIX, f" (copy {k}){DAPO_SUFFIX}")
    return {**row, "prompt": [{**turn, "content": varied}, *row["prompt"][1:]]}


def write_datasets(root: Path) -> list[str]:
    """The fixtures under ``root/<hub id>/``: training datasets as the files config/paper_tiny.yaml names, the
    evaluation tasks' data as a local dataset folder lm-eval's ``load_dataset(<hub id>[, <config>])`` reads."""
    written = []
    for hub_id, (fixture, name) in TRAIN_DATA.items():
        (root / hub_id).mkdir(parents=True, exist_ok=True)
        rows = [json.loads(line) for line in (FIXTURES / fixture).read_text().splitlines() if line.strip()]
        copies = [_copy(row, k) for k in range(REPEAT) for row in rows]  # enough rows for a train batch
        (root / hub_id / name).write_text("".join(json.dumps(row) + "\n" for row in copies))
        written.append(f"{hub_id}/{name}")
    for hub_id, (fixture, name) in JUDGE_DATA.items():
        (root / hub_id).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(FIXTURES / fixture, root / hub_id / name)
        written.append(f"{hub_id}/{name}")
    shutil.copyfile(FIXTURES / GLM_DATA[0], root / GLM_DATA[1])
    arena = [
        json.loads(line) for line in (FIXTURES / JUDGE_DATA["lmarena-ai/arena-hard-auto-v0.1"][0]).open()
    ]
    (root / ARENA_BASELINE).parent.mkdir(parents=True, exist_ok=True)
    (root / ARENA_BASELINE).write_text("".join(
        json.dumps({"question_id": q["question_id"], "answer": "A stand-in baseline answer."}) + "\n" for q in arena))  # fmt: skip
    for image in IMAGES:
        shutil.copyfile(FIXTURES / image, root / "hiyouga/geometry3k" / Path(image).name)
    for task, (hub_id, config, split) in _eval_tasks().items():
        folder = root / hub_id
        folder.mkdir(parents=True, exist_ok=True)
        name = f"{config or split}.jsonl"
        shutil.copyfile(FIXTURES / f"{task}.jsonl", folder / name)
        if config:  # a named config: the dataset card says which file holds it
            (folder / "README.md").write_text(
                f"---\nconfigs:\n- config_name: {config}\n  data_files:\n  - split: {split}\n    path: {name}\n---\n"
            )
        written.append(f"{hub_id}/{name}")
    # lm-eval's own tasks of paper.yaml's task sets; the image-text tasks (hub parquet layout, Image features)
    return (
        written
        + write_lm_eval_datasets(root)
        + write_image_datasets(root, FIXTURES)
        + [write_punkt_tab(root)]
    )


LINKS = (
    "Snakefile",
    "rules",
    "notebooks",
    "psftlib",
    "environment.lock.yml",
    "environment.gpu.lock.yml",
    "results/paper",
)


def link_project(root: Path, project: Path = CHECKOUT) -> None:
    """Links from ``root`` to ``project``'s workflow, code, notebooks, the paper's numbers (``results/paper``) and each
    profile (``config/*``), so ``root`` is a project root of its own (``PSFT_ROOT=root``) whose outputs stay in it."""
    links = [*LINKS, *(str(p.relative_to(project)) for p in sorted((project / "config").iterdir()))]
    for name in links:
        link = root / name
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.is_symlink() and name != f"config/{PROFILE}.yaml":
            link.symlink_to(project / name)


PROFILE = "paper_tiny"
TRAIN_BATCH = (
    32  # the paper's 256, /8: every mini batch of paper.yaml (256, 64, 32, 16) stays >= 2 (2 processes)
)


def tiny_profile(paper: dict[str, Any]) -> dict[str, Any]:
    """``config/paper.yaml`` (a mapping) cut to the tiny hub world: every run, run source, cold start, figure and
    table kept; sizes cut (batches /8, one epoch, 16 generated tokens, 2 samples per problem, 2 GRPO rounds, 2 CPU
    processes under FSDP), data read from the stand-in files, evaluation on the HF backend (2 problems per task) with
    the paper's task sets, lm-eval's own tasks on stand-in data (:mod:`psftlib.worlds.stand_in_tasks`); the
    in-training curves on our paper_* tasks only. Any other key is paper.yaml's."""
    tiny = copy.deepcopy(paper)
    tiny.update(
        profile=PROFILE, threads=1, description=f"{paper['description']}; tiny CPU stand-ins (stand_ins.py)"
    )
    tiny["model"] = {k: TINY[k] for k in paper["model"] if k in TINY}
    ev = tiny["eval"]
    ev.update(backend="hf", batch_size=8, max_gen_toks=16, include_defaults=True, repeats=2, limit=2)
    # the curves (evaluated at every train batch of every run): our tasks only, so no lm-eval index (~7 s) each
    # time; out of domain the first of ours (SuperGPQA for GPQA)
    ours = {name: [t for t in tasks if t.startswith("paper_")] for name, tasks in ev["task_sets"].items()}
    ev["task_sets"]["curves"] = [*ours["curves"], *ours["out_of_domain"][:1]]
    if "task_set_runs" in ev:  # the restrictions of the sets kept
        ev["task_set_runs"] = {k: runs for k, runs in ev["task_set_runs"].items() if k in ev["task_sets"]}
    ev["during_training"].update(every_train_batches=1, repeats=2, limit=1)
    if "backend" in ev["during_training"]:
        ev["during_training"]["backend"] = "hf"
    scale = paper["train"]["train_batch_size"] // TRAIN_BATCH
    tiny["train"].update(train_batch_size=TRAIN_BATCH, mini_batch_size=paper["train"]["mini_batch_size"] // scale,
                         micro_batch_size=1, epochs=1.0, max_length=TINY["max_position_embeddings"],
                         logprob_chunk_size=256, gradient_checkpointing=False, bf16=False, checkpoint_every=0)  # fmt: skip
    for run in tiny["runs"].values():
        run.update({k: run[k] // scale for k in ("train_batch_size", "mini_batch_size") if k in run})
        run.update({k: run[k] / 5 for k in ("epochs",) if k in run})  # Table 13's 5 / 10 epochs -> 1 / 2
        run.update({k: TINY["max_position_embeddings"] for k in ("max_length",) if k in run})
        run.update({k: 1 for k in ("sft_warmup_train_batches",) if k in run})
    tiny["grpo"].update(eval_every=1, train_batch_size=2, mini_batch_size=2, micro_batch_size=2, num_generations=2,
                        max_prompt_length=512, max_completion_length=16, overlong_buffer=4, train_batches=2)  # fmt: skip
    tiny["grpo"].update({k: False for k in ("use_vllm",) if k in tiny["grpo"]})
    tiny["dpo"].update(eval_every=1, batch_size=8, micro_batch_size=2, max_length=512)
    hub = tiny["paper"]
    for spec in hub["datasets"].values():
        spec.update(id=f"{spec['id']}/{TRAIN_DATA[spec['id']][1]}", limit=TRAIN_BATCH)
    hub["datasets"]["ultrafeedback_prefs"]["limit"] = 16  # DPO: 2 optimizer steps of 8 pairs
    for own in [*hub.get("run_sources", {}).values(), *(hub.get("base_models") or {}).values()]:
        # §4.4's 5k responses: the tiny grpo's 16 tokens
        if "max_completion_length" in (own.get("grpo") or {}):
            own["grpo"]["max_completion_length"] = tiny["grpo"]["max_completion_length"]
    hub["launcher"].update(accelerate_config="config/accelerate/fsdp_cpu.yaml", num_processes=2)
    if judge := hub.get(
        "judge"
    ):  # Table 3's judge: the MoE stand-in on transformers, the fixtures' questions
        judge.update({k: v for k, v in (("backend", "hf"), ("tensor_parallel_size", 1), ("max_judge_tokens", 16))
                      if k in judge})  # fmt: skip
        for spec in judge.get("benchmarks", {}).values():
            spec.pop("config", None)
            spec.update(
                questions=f"{spec['questions']}/{JUDGE_DATA[spec['questions']][1]}",
                limit=2,
                max_new_tokens=16,
            )
            spec.update({k: 10 for k in ("bootstrap_rounds",) if k in spec})
        if "alpaca_eval" in judge.get("benchmarks", {}):
            judge["benchmarks"]["alpaca_eval"]["glm_data"] = GLM_DATA[1]
    hub["resources"] = {rule: {**spec, "gpu": 0} for rule, spec in hub.get("resources", {}).items()}
    return tiny


def write_profile(root: Path, project: Path = CHECKOUT) -> Path:
    """``root/config/paper_tiny.yaml``: :func:`tiny_profile` of ``project``'s ``config/paper.yaml``, validated."""
    import yaml

    from psftlib.config import validate_profile

    tiny = tiny_profile(yaml.safe_load((project / "config" / "paper.yaml").read_text()))
    path = root / "config" / f"{PROFILE}.yaml"
    validate_profile(copy.deepcopy(tiny), str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"# written by psftlib.worlds.stand_ins.tiny_profile from {project}/config/paper.yaml\n"
                    + yaml.safe_dump(tiny, sort_keys=False, width=120))  # fmt: skip
    return path


def write_hub(root: str | Path) -> Path:
    """The tiny hub world in ``root`` (models, tokenizer, datasets) and the links of :func:`link_project`; written
    once (a ``root/.stand_ins`` stamp lists what it holds; delete the folder to rebuild)."""
    root = Path(root).resolve()
    stamp = root / ".stand_ins"
    if stamp.exists():
        return root
    root.mkdir(parents=True, exist_ok=True)
    written = {"models": write_models(root), "datasets": write_datasets(root)}
    link_project(root)
    write_profile(root)
    stamp.write_text(json.dumps(written, indent=1) + "\n")
    return root


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m psftlib.worlds.stand_ins", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("root", help="folder to write the stand-ins into (the DAG's project root, PSFT_ROOT)")
    args = parser.parse_args(argv)
    root = write_hub(args.root)
    print(f"tiny hub world in {root}; run:\n  cd {root} && PSFT_ROOT=$PWD NLTK_DATA=$PWD/{NLTK_DATA} snakemake "
          "--cores 2 --configfile config/paper_tiny.yaml")  # fmt: skip


if __name__ == "__main__":
    main()
