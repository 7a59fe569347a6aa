"""GRPO with images on the tiny stand-in Qwen2.5-VL (§4.4: RL on Geometry-3K after the VLM's SFT/PSFT): the figures
reach the vision tower in generation and in the loss's forward, the ``<image>`` placeholder becomes the model's image
slot, a checkpoint saved the way our SFT saves it gets its processor back, and image-less prompts still run."""

from __future__ import annotations

import functools
import json
import shutil

import pytest
import torch
import yaml

from psftlib.post.grpo import GRPOSettings, image_conversation, load_image, run_grpo
from psftlib.worlds import loaders, stand_ins
from psftlib.worlds.build import load_checkpoint, save_pretrained_atomic
from psftlib.worlds.models import copy_processor_files, load_processor

VLM = "Qwen/Qwen2.5-VL-7B-Instruct"
TINY = {"train_batch_size": 2, "mini_batch_size": 2, "micro_batch_size": 2, "num_generations": 2,
        "max_prompt_length": 512, "max_completion_length": 8, "overlong_buffer": 4, "train_batches": 1}  # fmt: skip


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return stand_ins.write_hub(tmp_path_factory.mktemp("hub"))


@pytest.fixture(scope="module")
def cold_start(world, tmp_path_factory):
    """``vlm_sft`` of the tiny paper profile trained by ``psftlib.train.hub`` from the stand-in VLM (no curves)."""
    from psftlib.train.hub import train_hub_run

    tmp = tmp_path_factory.mktemp("cold")
    profile = yaml.safe_load((world / "config" / "paper_tiny.yaml").read_text())
    profile["eval"]["during_training"]["every_train_batches"] = 0  # no curves: lm-eval is not under test here
    (tmp / "paper_tiny.yaml").write_text(yaml.safe_dump(profile))
    spec = profile["paper"]["datasets"][profile["paper"]["run_sources"]["vlm_sft"]["data"]]
    words = lambda text: len(text.split())  # noqa: E731 (a token counter for the 4k cutoff)
    loaded = loaders.load_dataset_spec(spec, profile["paper"]["system_prompts"], words, world / spec["id"])
    loaders.write_records(tmp / "data.jsonl", loaded.records)
    train_hub_run(tmp / "paper_tiny.yaml", "vlm_sft", base=str(world / VLM), data=tmp / "data.jsonl",
                  out_dir=tmp / "run", progress=False)  # fmt: skip
    # psftlib.train saves the model and tokenizer; psftlib.train.hub adds the base's image processor
    assert (tmp / "run" / "checkpoint" / "preprocessor_config.json").exists()
    return tmp / "run" / "checkpoint"


def test_a_checkpoint_without_the_processor_files_gets_them_from_its_base(world, tmp_path):
    model, tokenizer = load_checkpoint(world / VLM)
    save_pretrained_atomic(model, tokenizer, tmp_path)  # what our trainer writes
    assert load_processor(tmp_path) is None
    assert copy_processor_files(world / VLM, tmp_path) == ["preprocessor_config.json"]
    assert load_processor(tmp_path).image_processor.merge_size == 2


@pytest.fixture()
def vision_calls(monkeypatch):
    """Every call of the Qwen2.5-VL vision tower: (pixel rows, image grids, gradients on, tower trainable)."""
    from transformers.models.qwen2_5_vl import modeling_qwen2_5_vl as qwen

    calls = []
    tower = qwen.Qwen2_5_VisionTransformerPretrainedModel
    forward = tower.forward

    @functools.wraps(forward)
    def spy(self, hidden_states, grid_thw=None, **kwargs):
        trainable = all(p.requires_grad for p in self.parameters())
        calls.append((hidden_states.shape[0], grid_thw.tolist(), torch.is_grad_enabled(), trainable))
        return forward(self, hidden_states, grid_thw=grid_thw, **kwargs)

    monkeypatch.setattr(tower, "forward", spy)
    return calls


def geometry_rows(world):
    rows = loaders.geometry3k(world / "hiyouga/geometry3k/train.jsonl", limit=2).records
    assert all(r["prompt"].startswith("<image>") and len(r["images"]) == 1 for r in rows)
    return rows


def test_the_placeholder_becomes_an_image_part_where_it_stood():
    row = {"system": "S", "prompt": "Look <image> and <image>.", "answer": "1"}
    user = image_conversation(row, 2)[1]["content"]
    assert user == [{"type": "text", "text": "Look "}, {"type": "image"}, {"type": "text", "text": " and "},
                    {"type": "image"}, {"type": "text", "text": "."}]  # fmt: skip
    assert image_conversation({"prompt": "No mark", "answer": "1"}, 1)[0]["content"][0] == {"type": "image"}
    with pytest.raises(ValueError, match="2 <image> placeholders for 1 images"):
        image_conversation(row, 1)


def test_grpo_with_images_feeds_them_to_the_vision_tower(world, cold_start, vision_calls, tmp_path):
    processor = load_processor(cold_start)
    rows = geometry_rows(world)
    rows[1] = {**rows[1], "images": [{"bytes": (world / "hiyouga/geometry3k/geometry3k_1.png").read_bytes()}]}
    out = run_grpo(cold_start, rows, GRPOSettings(**TINY), tmp_path)
    assert len(out) == 1 and "entropy" in out[0]
    # 2 prompts x 2 completions: the rollout sees 4 images, the loss's forward (with gradients) sees them again
    grids = [g for _, grids_, _, _ in vision_calls for g in grids_]
    assert any(not grad and len(g) == 4 for _, g, grad, _ in vision_calls)
    assert sum(len(g) for _, g, grad, _ in vision_calls if grad) == 4
    for n_rows, grid, _, _ in vision_calls:  # every image's patches, none dropped
        assert n_rows == sum(t * h * w for t, h, w in grid)
    assert all(
        trainable for *_, trainable in vision_calls
    )  # not frozen in RL (psftlib.post.grpo's docstring)
    # the image slot in the prompt: <|image_pad|> once per merged patch, where the <image> placeholder stood
    conv = image_conversation(rows[0], 1)
    text = processor.apply_chat_template(conv, add_generation_prompt=True, tokenize=False)
    assert "<image>" not in text and "<|vision_start|><|image_pad|><|vision_end|>Find $x$" in text
    image = load_image(rows[0]["images"][0])
    filled = [{**turn, "content": [{**p, "image": image} if p["type"] == "image" else p for p in turn["content"]]}
              for turn in conv]  # fmt: skip
    ids = processor.apply_chat_template(filled, add_generation_prompt=True, tokenize=True, return_dict=True)
    t, h, w = grids[0]
    pads = sum(i == processor.image_token_id for i in ids["input_ids"][0])
    assert pads == t * h * w // processor.image_processor.merge_size**2 > 0
    saved = tmp_path / "checkpoint"
    assert load_processor(saved) is not None  # the GRPO checkpoint keeps the image processor
    assert json.loads((saved / "config.json").read_text())["model_type"] == "qwen2_5_vl"


def test_prompts_without_images_still_run_on_the_vlm(world, cold_start, vision_calls, tmp_path):
    rows = [{**r, "prompt": r["prompt"].replace("<image>", ""), "images": []} for r in geometry_rows(world)]
    out = run_grpo(cold_start, rows, GRPOSettings(**TINY), tmp_path)
    assert len(out) == 1 and not vision_calls


def test_a_mixed_prompt_set_and_a_vlm_without_its_processor_are_refused(world, cold_start, tmp_path):
    rows = geometry_rows(world)
    with pytest.raises(ValueError, match="1 of 2 prompts have images"):
        run_grpo(cold_start, [rows[0], {**rows[1], "images": []}], GRPOSettings(**TINY), tmp_path / "a")
    bare = tmp_path / "bare"
    shutil.copytree(cold_start, bare)
    (bare / "preprocessor_config.json").unlink()
    with pytest.raises(FileNotFoundError, match="no preprocessor_config.json"):
        run_grpo(bare, rows, GRPOSettings(**TINY), tmp_path / "b")
