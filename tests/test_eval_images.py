"""Image-text evaluation (Table 5): the tiny Qwen2.5-VL of the tiny hub world on every image task through
psftlib.eval's public API (hf backend, lm-eval's hf-multimodal), the images reaching the vision tower, and the named
errors for a text-only model, a mixed set, a checkpoint without its processor and vLLM without its packages."""

import json
import shutil
from pathlib import Path

import pytest

from psftlib.eval import EvalConfig, EvalError, evaluate
from psftlib.worlds import stand_ins
from psftlib.worlds.stand_in_images import image_tasks

VLM = "Qwen/Qwen2.5-VL-7B-Instruct"
IMAGE_SLOT = "<|vision_start|><|image_pad|><|vision_end|>"
TASKS = sorted(image_tasks())
# image slots in the prompt of each fixture row (MMMU's second question names <image 1> and <image 2>)
SLOTS = {"paper_mmmu": [1, 2]}
CFG = EvalConfig(repeats=2, max_gen_toks=8, batch_size=2, limit=2,
                 system_instruction="Please reason step by step, and put your final answer within \\boxed{}.")  # fmt: skip


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """The tiny hub world's models and datasets (no profile: only what evaluation reads)."""
    root = tmp_path_factory.mktemp("vlm_hub")
    stand_ins.write_models(root)
    stand_ins.write_datasets(root)
    return root


@pytest.fixture()
def in_world(world, monkeypatch) -> Path:
    monkeypatch.chdir(world)  # hub ids resolve to the world's folders
    return world


@pytest.fixture(scope="module")
def vlm_and_patches(world):
    """The tiny VLM loaded once, with a hook that records the patches each call of its vision tower receives."""
    from psftlib.worlds.build import load_checkpoint
    from psftlib.worlds.models import vision_modules

    model, _ = load_checkpoint(world / VLM)
    patches: list[int] = []
    tower = next(m for name, m in vision_modules(model).items() if name.endswith("visual"))
    tower.register_forward_hook(lambda module, args, kwargs, out: patches.append(int(args[0].shape[0])),
                                with_kwargs=True)  # fmt: skip
    return model, patches


def test_every_image_task_is_one_of_the_five_of_table5():
    assert TASKS == ["paper_geo3k", "paper_mathverse", "paper_mathvista", "paper_mmmu", "paper_mmmu_pro"]


@pytest.mark.parametrize("task", TASKS)
def test_the_tiny_vlm_is_evaluated_on_each_image_task_and_sees_its_images(
    task, in_world, vlm_and_patches, tmp_path
):
    model, patches = vlm_and_patches
    patches.clear()
    summary = evaluate(model, [task], CFG, out=tmp_path / task, checkpoint=str(in_world / VLM))
    scores = summary["scores"][task]
    assert scores["n"] == 2 and scores["k"] == 2
    assert all(0.0 <= scores[m] <= 1.0 for m in ("avg_at_k", "pass_at_k", "maj_at_k"))
    rows = [json.loads(line) for line in (tmp_path / f"{task}.samples.jsonl").read_text().splitlines()]
    assert [r["prompt"].count(IMAGE_SLOT) for r in sorted(rows, key=lambda r: r["doc_id"])] == SLOTS.get(
        task, [1, 1]
    )
    assert all("<image" not in r["prompt"] for r in rows)  # every placeholder became an image slot
    assert all(r["target"] and len(r["samples"]) == 2 for r in rows)
    # the processor's pixel values reached the vision tower: one call per generation batch, with image patches
    assert patches and all(p > 0 for p in patches)


def test_a_checkpoint_folder_is_evaluated_with_its_own_processor(in_world, tmp_path):
    summary = evaluate(VLM, ["paper_geo3k"], CFG, out=tmp_path / "geo3k")
    assert summary["scores"]["paper_geo3k"]["n"] == 2 and summary["checkpoint"] == VLM
    assert IMAGE_SLOT in (tmp_path / "geo3k.samples.jsonl").read_text().replace("\\n", "\n")


def test_a_text_only_model_given_image_tasks_is_refused(in_world):
    with pytest.raises(
        EvalError, match=r"Qwen2.5-7B-Instruct is a text-only model .* image-text tasks \['paper_geo3k'\]"
    ):
        evaluate("Qwen/Qwen2.5-7B-Instruct", ["paper_geo3k"], CFG)


def test_a_set_mixing_image_and_text_tasks_is_refused(in_world):
    with pytest.raises(
        EvalError, match=r"mixes image-text tasks \['paper_mmmu'\] with text-only tasks \['paper_math500'\]"
    ):
        evaluate(VLM, ["paper_mmmu", "paper_math500"], CFG)


def test_a_vlm_checkpoint_without_its_processor_is_refused(in_world, tmp_path):
    bare = tmp_path / "vlm_without_processor"
    shutil.copytree(in_world / VLM, bare, ignore=shutil.ignore_patterns("preprocessor_config.json"))
    with pytest.raises(EvalError, match="vlm_without_processor: no preprocessor_config.json"):
        evaluate(bare, ["paper_geo3k"], CFG)


def test_the_vllm_backend_without_its_packages_names_them(in_world):
    cfg = EvalConfig(backend="vllm", limit=1)
    with pytest.raises(EvalError, match="vllm-vlm backend needs the (vllm|ray) package"):
        evaluate(VLM, ["paper_geo3k"], cfg)


def test_answers_are_scored_by_letter_or_by_math_verify():
    from psftlib.eval.harness import task_yaml

    _, path = task_yaml("paper_mmmu")
    assert path is not None and path.parent.name == "images"  # the harness finds the image tasks' YAMLs
    import importlib.util

    spec = importlib.util.spec_from_file_location("image_scoring", path.parent / "scoring.py")
    scoring = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(scoring)
    choice = {"answer": "B", "answers": ["B"], "letters": "ABCD"}
    assert scoring.process_results(choice, [["so \\boxed{(B)}", "\\boxed{\\text{B}}", "\\boxed{C}"]]) == {
        "avg_at_k": 2 / 3, "pass_at_k": 1.0, "maj_at_k": 1.0}  # fmt: skip
    assert scoring.process_results(choice, [["\\boxed{E}", "\\boxed{Bee}"]])["pass_at_k"] == 0.0
    free = {"answer": "24/7", "answers": ["24/7", "3.429"], "letters": ""}
    assert (
        scoring.process_results(free, [["\\boxed{\\frac{24}{7}}", "\\boxed{3.429}", "no box"]])["avg_at_k"]
        == 2 / 3
    )
