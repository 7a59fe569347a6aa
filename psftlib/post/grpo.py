"""GRPO from a cold start with the paper's DAPO settings (Table 12), through TRL's ``GRPOTrainer``.

Paper Table 12 -> ``GRPOSettings`` -> TRL::

    clip_ratio_low 0.2 / clip_ratio_high 0.28   clip_low / clip_high        epsilon / epsilon_high
    kl_coef 0.0                                  beta 0 (no reference model) beta
    token-level DAPO loss                        loss_type "dapo"            loss_type
    rollout.n 8, temperature 1.0                 num_generations, temperature
    train_batch_size 256, ppo_mini_batch 32      prompts per generation round / per optimizer step (x n completions)
    max_response_length 10k, overlong buffer 2k  max_completion_length, overlong_buffer (DAPO soft punishment)
    lr 1e-6, total_training_steps 100            lr, train_batches (generation rounds; 8 optimizer steps each)

Generation: Hugging Face ``generate`` by default (CPU tests, small worlds); with ``use_vllm`` TRL generates the rollouts
with vLLM (the paper's verl rolls out with vLLM too), colocated in the training processes (``vllm_mode: colocate``,
``vllm_gpu_memory_utilization`` and ``vllm_tensor_parallel_size`` of each engine) or through a ``trl vllm-serve``
server (``vllm_mode: server`` at ``vllm_server_host:vllm_server_port``; that server's memory and tensor parallel size
are set when it is started). vLLM's context is prompt + completion lengths; TRL's default correction of the
vLLM/trainer sampling mismatch (``vllm_importance_sampling_correction``) is kept. vllm is imported only then.

Images (§4.4: the VLM's GRPO on Geometry-3K): rows with ``images`` (PIL images, ``{"bytes", "path"}`` dicts or paths,
as :func:`psftlib.worlds.loaders.geometry3k` gives them) go to TRL as its ``images`` column, their conversations in TRL's
multimodal form (:func:`image_conversation`: each ``<image>`` placeholder becomes a ``{"type": "image"}`` content part),
with the cold start's processor as ``processing_class``; such a cold start must be a VLM saved with its image
processor. The vision tower is trained with the language model: the paper freezes it for the text-only SFT/PSFT stage
only (App. C.7.4, "update only the LLM component"), and its RL framework (verl) trains every parameter by default
(``freeze_vision_tower: false``). Prompts without images are text-only exactly as before; a prompt set has images
in every row or in none.

Reward: 1 if the last ``\\boxed{}`` of a completion equals the reference (the eval harness's math-verify check),
else 0, plus DAPO's soft overlong punishment (0 up to ``max - buffer`` tokens, then linear down to -1 at the
maximum). Outputs in ``out_dir``: ``metrics.jsonl``, ``eval.jsonl``, ``checkpoint/``.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import io
from pathlib import Path
from typing import Any

from psftlib.config import ConfigError
from psftlib.eval.verify import extract_answer, is_correct
from psftlib.post.common import conversation, device_args, run_trl

# trl is imported where it is used (it loads transformers' trainer stack, seconds to import)


@dataclasses.dataclass
class GRPOSettings:
    lr: float = 1e-6
    train_batch_size: int = 256  # prompts per generation round (one old-policy refresh)
    mini_batch_size: int = 32  # prompts per optimizer step
    micro_batch_size: int = 8  # completions per forward/backward (memory only)
    num_generations: int = 8  # completions per prompt (rollout.n)
    temperature: float = 1.0
    top_p: float = 1.0
    clip_low: float = 0.2
    clip_high: float = 0.28
    kl_coef: float = 0.0
    max_prompt_length: int = 2048  # longer prompts are dropped (TRL 1.16 does not truncate prompts)
    max_completion_length: int = 10240
    overlong_buffer: int = 2048  # DAPO soft overlong punishment cache; 0 = off
    train_batches: int = 100  # generation rounds (verl's total_training_steps)
    weight_decay: float = 0.1
    max_grad_norm: float = 1.0
    seed: int = 0
    use_vllm: bool = False  # rollouts with vLLM (TRL) instead of Hugging Face generate
    vllm_mode: str = "colocate"  # "colocate": an engine in each training process; "server": trl vllm-serve
    vllm_gpu_memory_utilization: float = 0.3  # colocate: GPU memory share of each engine (TRL's default)
    vllm_tensor_parallel_size: int = 1  # colocate: GPUs per engine (TRL's default)
    vllm_server_host: str = "0.0.0.0"  # server mode (TRL's default)
    vllm_server_port: int = 8000  # server mode (TRL's default)
    # server mode, started by the job (psftlib.post.vllm_server): its GPUs (the job's GPUs after the training
    # processes'; tensor parallel vllm_tensor_parallel_size, data parallel the rest), memory share and start wait
    vllm_server_gpus: int = 1
    vllm_server_gpu_memory_utilization: float = (
        0.9  # trl vllm-serve's default (the GPUs are the server's alone)
    )
    vllm_server_start_timeout: float = 1200.0  # seconds until /health answers (weights load, CUDA graphs)

    def check_vllm(self) -> None:
        """Refuse ``use_vllm`` when the vllm package cannot be imported (before any model is loaded)."""
        if self.use_vllm and importlib.util.find_spec("vllm") is None:
            raise ConfigError(
                "grpo.use_vllm: true needs the vllm package, which is not installed (it has no CPU build): install "
                "the GPU lock (requirements-gpu.lock) on a GPU machine, or set grpo.use_vllm: false in the profile"
            )

    def vllm_args(self) -> dict[str, Any]:
        """``GRPOConfig``'s vLLM arguments: ``use_vllm=False`` alone unless vLLM generates."""
        if not self.use_vllm:
            return {"use_vllm": False}
        return {
            "use_vllm": True,
            "vllm_mode": self.vllm_mode,
            "vllm_gpu_memory_utilization": self.vllm_gpu_memory_utilization,
            "vllm_tensor_parallel_size": self.vllm_tensor_parallel_size,
            "vllm_server_host": self.vllm_server_host,
            "vllm_server_port": self.vllm_server_port,
            "vllm_max_model_length": self.max_prompt_length + self.max_completion_length,
        }

    @property
    def steps_per_train_batch(self) -> int:
        return self.train_batch_size // self.mini_batch_size

    def trl_config(self, trl_dir: Path, processes: int = 1):
        """The equivalent ``GRPOConfig`` (batch sizes in TRL count completions, not prompts, per process: a mini batch
        of prompts is split over ``processes``)."""
        from trl import GRPOConfig

        completions_per_step = self.mini_batch_size * self.num_generations
        if (
            completions_per_step % (self.micro_batch_size * processes)
            or self.train_batch_size % self.mini_batch_size
        ):
            raise ValueError(
                f"grpo: mini_batch_size x num_generations ({completions_per_step}) must be a multiple of "
                f"micro_batch_size ({self.micro_batch_size}) x {processes} processes, train_batch_size of "
                "mini_batch_size"
            )
        grad_accum = completions_per_step // (self.micro_batch_size * processes)
        return GRPOConfig(
            output_dir=str(trl_dir),
            loss_type="dapo", epsilon=self.clip_low, epsilon_high=self.clip_high, beta=self.kl_coef,
            num_generations=self.num_generations, temperature=self.temperature, top_p=self.top_p,
            max_completion_length=self.max_completion_length, mask_truncated_completions=False,
            per_device_train_batch_size=self.micro_batch_size, gradient_accumulation_steps=grad_accum,
            steps_per_generation=self.steps_per_train_batch * grad_accum, num_iterations=1,
            learning_rate=self.lr, lr_scheduler_type="constant", warmup_steps=0, weight_decay=self.weight_decay,
            max_grad_norm=self.max_grad_norm, max_steps=self.train_batches * self.steps_per_train_batch,
            **self.vllm_args(), logging_steps=1, report_to=[], log_completions=False, save_strategy="no",
            seed=self.seed, data_seed=self.seed, dataloader_num_workers=0, disable_tqdm=False,
            reward_weights=[1.0, 1.0] if self.overlong_buffer else [1.0], **device_args(),
        )  # fmt: skip


def correctness_reward(completions: list, answer: list[str], **kwargs: Any) -> list[float]:
    """1.0 when a completion's last boxed answer equals the reference (math-verify), else 0.0."""
    out = []
    for completion, gold in zip(completions, answer, strict=True):
        text = completion[0]["content"] if isinstance(completion, list) else completion
        out.append(1.0 if is_correct(extract_answer(text), str(gold)) else 0.0)
    return out


def overlong_reward(max_completion_length: int, buffer: int):
    """DAPO's soft overlong punishment (TRL's implementation)."""
    from trl.rewards import get_soft_overlong_punishment

    return get_soft_overlong_punishment(max_completion_len=max_completion_length, soft_punish_cache=buffer)


IMAGE_PLACEHOLDER = "<image>"  # Geometry3K's mark of where its figure goes in the problem text


def image_conversation(row: dict[str, Any], n_images: int) -> list[dict[str, Any]]:
    """``conversation(row)`` in TRL's multimodal form (every content a list of ``{"type": ...}`` parts, one schema for
    the whole dataset). The user text is split at each ``<image>`` placeholder, which is dropped from the text and
    replaced by an image part: TRL fills the parts with the row's images in order and the processor's chat template
    writes the model's image slot there (Qwen2.5-VL: ``<|vision_start|><|image_pad|><|vision_end|>``, the pad
    expanded to the image's tokens). A text without a placeholder gets its images before it (TRL's default)."""
    turns = []
    for turn in conversation(row):
        pieces = turn["content"].split(IMAGE_PLACEHOLDER) if turn["role"] == "user" else [turn["content"]]
        parts: list[dict[str, Any]] = []
        for k, piece in enumerate(pieces):
            parts += [{"type": "image"}] if k else []
            parts += [{"type": "text", "text": piece}] if piece else []
        if turn["role"] == "user" and len(pieces) == 1:
            parts = [{"type": "image"} for _ in range(n_images)] + parts
        turns.append({"role": turn["role"], "content": parts})
    slots = sum(p["type"] == "image" for t in turns for p in t["content"])
    if slots != n_images:
        raise ValueError(f"grpo: prompt {row.get('id', '?')}: {slots} {IMAGE_PLACEHOLDER} placeholders for "
                         f"{n_images} images")  # fmt: skip
    return turns


def load_image(value: Any, root: Path | None = None) -> Any:
    """An RGB ``PIL.Image`` of a row's image: a PIL image, a ``{"bytes", "path"}`` dict or a path (a relative one
    beside the prompts file ``root`` if there, else from the working directory)."""
    from PIL import Image

    if isinstance(value, dict):
        value = io.BytesIO(value["bytes"]) if value.get("bytes") else value.get("path")
    if isinstance(value, (str, Path)):
        path = Path(value)
        if not path.is_absolute() and root is not None and (root / path).exists():
            path = root / path
        if not path.exists():
            raise FileNotFoundError(
                f"grpo: image {value}: no such file (looked beside {root} and in {Path.cwd()})"
            )
        value = path
    image = value if hasattr(value, "mode") else Image.open(value)
    return image.convert("RGB")


def run_grpo(
    cold_start: str | Path,
    prompts: list[dict[str, Any]],
    settings: GRPOSettings,
    out_dir: str | Path,
    evaluator: Any = None,
    eval_every: int = 0,
    image_root: str | Path | None = None,
) -> list[dict[str, float]]:
    """GRPO from the checkpoint ``cold_start`` on RL ``prompts`` (rows with ``prompt``, ``answer``, ``system``, and
    optionally ``images``: relative image paths are read beside ``image_root``, the prompts file's folder)."""
    settings.check_vllm()  # before TRL and the model load
    from trl import GRPOTrainer

    with_images = sum(bool(r.get("images")) for r in prompts)
    # all or none: TRL 1.16 hands the processor None for the image-less rows of a batch (a TypeError)
    if with_images not in (0, len(prompts)):
        raise ValueError(f"grpo: {with_images} of {len(prompts)} prompts have images: all or none must")
    root = Path(image_root) if image_root is not None else None

    def image_row(r: dict[str, Any], processor: Any) -> tuple[dict[str, Any], int]:
        """A dataset row with images, and its prompt length in tokens (image tokens included)."""
        images = [load_image(im, root) for im in r.get("images") or []]
        conv = image_conversation(r, len(images))
        filled, k = [], iter(images)
        for t in conv:
            filled.append({**t, "content": [{**p, "image": next(k)} if p["type"] == "image" else p
                                            for p in t["content"]]})  # fmt: skip
        ids = processor.apply_chat_template(
            filled, add_generation_prompt=True, tokenize=True, return_dict=True
        )["input_ids"]
        ids = ids[0] if ids and isinstance(ids[0], list) else ids  # batched: one conversation
        return {"prompt": conv, "answer": str(r["answer"]), "images": images}, len(ids)

    def dataset_rows(tokenizer: Any) -> list[dict[str, Any]]:
        rows = []
        for r in prompts:
            if with_images:  # tokenizer: the VLM's processor
                row, n = image_row(r, tokenizer)
                rows += [row] if n <= settings.max_prompt_length else []
                continue
            conv = conversation(r)
            ids = tokenizer.apply_chat_template(
                conv, add_generation_prompt=True, tokenize=True, return_dict=True
            )
            if len(ids["input_ids"]) <= settings.max_prompt_length:
                rows.append({"prompt": conv, "answer": str(r["answer"])})
        if len(rows) < settings.train_batch_size:
            raise ValueError(
                f"grpo: {len(rows)} usable prompts < train_batch_size {settings.train_batch_size}"
            )
        return rows

    rewards = [correctness_reward]
    if settings.overlong_buffer:
        rewards.append(overlong_reward(settings.max_completion_length, settings.overlong_buffer))
    return run_trl(GRPOTrainer, cold_start, dataset_rows, settings.trl_config, out_dir, evaluator, eval_every,
                   settings.steps_per_train_batch, images=bool(with_images), reward_funcs=rewards)  # fmt: skip
