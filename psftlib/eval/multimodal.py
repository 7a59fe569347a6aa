"""Image-text evaluation (Table 5): which task sets take images, and the lm-eval backend that feeds them to a
vision-language model (:func:`psftlib.eval.harness.evaluate` calls these; the choice is made from the tasks, no
config key): ``hf-multimodal`` (lm-eval's ``HFMultimodalLM``) when ``eval.backend`` is ``hf``, ``vllm-vlm``
(``VLLM_VLM``) when it is ``vllm``. A task takes images when its config has ``doc_to_image``
(``psftlib/eval/tasks/images/*.yaml``; lm-eval's ``mmmu_val`` too); a group or tag when one of its tasks does.

The model's processor (image processor, tokenizer, chat template) comes from, in this order: the ``processor``
argument (an object or folder), the checkpoint folder being evaluated, ``checkpoint`` (the folder an in-memory
model was loaded from), the model's ``name_or_path``; :func:`psftlib.worlds.models.load_processor` reads it (our
training copies the base model's processor files into each checkpoint: ``psftlib.worlds.models.copy_processor_files``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from psftlib.worlds.build import load_checkpoint

PROCESSOR_FILE = "preprocessor_config.json"  # a VLM checkpoint's image processor
MAX_IMAGES = 16  # per prompt (vLLM's limit_mm_per_prompt); MMMU names at most 7 images, some twice


class VisionModelError(RuntimeError):
    """A model, processor or backend that cannot run image-text tasks (the harness raises it as EvalError)."""


def takes_images(spec: str | dict[str, Any], task_manager: Any) -> bool:
    """Whether the lm-eval task spec (a name, or a config dict with overrides) takes images."""
    if isinstance(spec, dict) and "doc_to_image" in spec:
        return True
    name = spec if isinstance(spec, str) else spec.get("task") or spec.get("group")
    return _named_takes_images(name, task_manager.task_index, set())


def _named_takes_images(name: Any, index: dict[str, Any], seen: set[str]) -> bool:
    from lm_eval.tasks._index import Kind

    if isinstance(name, dict):  # a group's inline task config
        return "doc_to_image" in name or _named_takes_images(name.get("task"), index, seen)
    entry = index.get(name) if isinstance(name, str) else None
    if entry is None or name in seen:
        return False
    seen.add(name)
    if entry.kind == Kind.GROUP:
        children = (entry.cfg or {}).get("task", [])
    elif entry.kind == Kind.TAG:
        children = [n for n, e in index.items() if name in e.tags and e.kind != Kind.TAG]
    else:
        return "doc_to_image" in (entry.cfg or {})
    return any(
        _named_takes_images(c, index, seen) for c in (children if isinstance(children, list) else [children])
    )


def is_vision_language(model: Any) -> bool:
    """Whether ``model`` (a checkpoint folder or a loaded model) is a vision-language model (a ``vision_config``)."""
    if isinstance(model, (str, Path)):
        path = Path(model) / "config.json"
        return path.exists() and "vision_config" in json.loads(path.read_text())
    return getattr(getattr(model, "config", None), "vision_config", None) is not None


def image_lm(model: Any, cfg: Any, tasks: list[str], specs: list[Any], task_manager: Any, processor: Any = None,
             checkpoint: str | None = None) -> Any:  # fmt: skip
    """lm-eval's multimodal LM (:func:`vlm`) when the set's tasks take images; None when none does. A set that mixes
    image-text and text-only tasks is refused: one lm-eval backend evaluates a set."""
    image = [t for t, spec in zip(tasks, specs, strict=True) if takes_images(spec, task_manager)]
    if not image:
        return None
    if len(image) < len(tasks):
        raise VisionModelError(f"task set {tasks} mixes image-text tasks {image} with text-only tasks "
                               f"{[t for t in tasks if t not in image]}: evaluate them as separate sets")  # fmt: skip
    try:
        return vlm(model, cfg, image, processor, checkpoint)
    except FileNotFoundError as err:  # load_checkpoint: not a checkpoint folder
        raise VisionModelError(str(err)) from None


def vlm(model: Any, cfg: Any, tasks: list[str], processor: Any = None, checkpoint: str | None = None) -> Any:
    """lm-eval's multimodal LM for ``model`` (checkpoint folder or loaded model) on the image ``tasks``."""
    is_path = isinstance(model, (str, Path))
    if not is_vision_language(model):
        what = str(model) if is_path else f"the in-memory {type(model).__name__}"
        raise VisionModelError(
            f"{what} is a text-only model (no vision_config in its config): it cannot be evaluated on the image-text "
            f"tasks {tasks}; give them a vision-language checkpoint (e.g. a Qwen2.5-VL run)"
        )
    if cfg.backend == "vllm":
        return _vllm_vlm(model, cfg)
    from lm_eval.models.hf_vlms import HFMultimodalLM

    class WithProcessor(HFMultimodalLM):
        """``HFMultimodalLM`` with the processor given (lm-eval would load one by the model's name only)."""

        def _create_tokenizer(self, *args: Any, **kwargs: Any) -> None:
            self.processor, self.tokenizer = proc, proc.tokenizer

    source = processor if processor is not None else model if is_path else checkpoint or model.name_or_path
    from psftlib.worlds.models import load_processor

    proc = load_processor(source) if isinstance(source, (str, Path)) else source
    if proc is None:
        raise VisionModelError(_no_processor(source))
    if is_path:
        model, _ = load_checkpoint(model)
        import torch

        if torch.cuda.is_available():
            model.to("cuda")
    model.generation_config.eos_token_id = proc.tokenizer.eos_token_id
    model.generation_config.pad_token_id = proc.tokenizer.pad_token_id
    # the context length of the language model (a VLM's top-level config may not carry it; lm-eval's default
    # would then be 2,048, less than the paper's 10,240 new tokens)
    max_length = cfg.max_length or model.config.get_text_config().max_position_embeddings
    return WithProcessor(pretrained=model, batch_size=cfg.batch_size, max_length=max_length)


def _vllm_vlm(model: Any, cfg: Any) -> Any:
    if not isinstance(model, (str, Path)):
        raise VisionModelError(
            "eval backend 'vllm' evaluates a saved checkpoint folder, not an in-memory model "
            "(evaluate_saved saves one and evaluates it in a child process)"
        )
    if not (Path(model) / PROCESSOR_FILE).exists():
        raise VisionModelError(_no_processor(model))
    try:
        from lm_eval.models.vllm_vlms import VLLM_VLM
    except ImportError as err:
        raise VisionModelError(
            f"eval backend 'vllm' with image-text tasks: lm-eval's vllm-vlm backend needs the {err.name} package, "
            "which is not installed (vllm has no CPU build; lm-eval's vllm-vlm also imports ray). Install the GPU "
            "lock on a GPU machine, or set eval.backend: hf."
        ) from None
    return VLLM_VLM(pretrained=str(model), dtype=cfg.vllm_dtype, tensor_parallel_size=cfg.vllm_tensor_parallel_size,
                    gpu_memory_utilization=cfg.vllm_gpu_memory_utilization, seed=cfg.seed, batch_size="auto",
                    max_images=MAX_IMAGES)  # fmt: skip


def _no_processor(folder: Any) -> str:
    return (f"{folder}: no {PROCESSOR_FILE}; a vision-language checkpoint needs its processor saved beside the weights "
            "(psftlib.worlds.models.copy_processor_files(<base model>, <checkpoint>), or pass evaluate(processor=...))")  # fmt: skip
