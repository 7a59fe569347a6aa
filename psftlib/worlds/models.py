"""Released models for the ``paper`` profile: load by hub id in bf16 with the best attention kernel present,
gradient checkpointing, and, for vision-language models, a frozen vision tower (§4.4: PSFT on text-only data
updates only the language model; the vision encoder and its merger/projector stay as released).

``load_model("Qwen/Qwen2.5-7B-Instruct")`` -> (model, tokenizer). FlashAttention-2 is used when the
``flash_attn`` package imports and a GPU is present, else PyTorch SDPA. Nothing is downloaded at import.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path
from typing import Any

import torch

# transformers is imported where a model is loaded (seconds to import; validating a profile must not pay it)

# Sub-modules that make up the "multimodal component" of the VLMs we know (Qwen2-VL, Qwen2.5-VL, Qwen3-VL:
# ``model.visual`` with its merger; LLaVA-style: ``vision_tower`` + ``multi_modal_projector``).
VISION_MODULE_NAMES = ("visual", "vision_tower", "vision_model", "multi_modal_projector", "mm_projector")
DTYPES = {
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "float32": torch.float32,
}


def attn_implementation(preferred: str = "auto") -> str:
    """``flash_attention_2`` if requested or (auto) if ``flash_attn`` imports and CUDA is present, else ``sdpa``."""
    if preferred not in ("auto", "flash_attention_2", "sdpa", "eager"):
        raise ValueError(f"attn_implementation: {preferred!r} is not auto, flash_attention_2, sdpa or eager")
    if preferred != "auto":
        return preferred
    has_flash = importlib.util.find_spec("flash_attn") is not None
    return "flash_attention_2" if has_flash and torch.cuda.is_available() else "sdpa"


def is_vision_language(model_or_config: Any) -> bool:
    """True for a model (or config) with a vision part (``vision_config``)."""
    config = getattr(model_or_config, "config", model_or_config)
    return getattr(config, "vision_config", None) is not None


def load_model(
    model_id: str,
    *,
    dtype: str = "bfloat16",
    attn: str = "auto",
    gradient_checkpointing: bool = True,
    freeze_vision: bool | None = None,
    device_map: Any = None,
    trust_remote_code: bool = False,
) -> tuple[torch.nn.Module, Any]:
    """(model, tokenizer) for a hub id or local folder.

    Causal LMs load with ``AutoModelForCausalLM``; vision-language models (a ``vision_config``) with
    ``AutoModelForImageTextToText`` and, unless ``freeze_vision=False``, a frozen vision tower. The
    tokenizer's pad token falls back to EOS. ``use_cache`` is off when gradient checkpointing is on.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    if dtype not in DTYPES:
        raise ValueError(f"dtype: {dtype!r} is not one of {sorted(DTYPES)}")
    config = AutoConfig.from_pretrained(model_id, trust_remote_code=trust_remote_code)
    vlm = is_vision_language(config)
    kwargs = {"dtype": DTYPES[dtype], "attn_implementation": attn_implementation(attn),
              "trust_remote_code": trust_remote_code, "device_map": device_map}  # fmt: skip
    if vlm:
        from transformers import AutoModelForImageTextToText

        model = AutoModelForImageTextToText.from_pretrained(model_id, **kwargs)
    else:
        model = AutoModelForCausalLM.from_pretrained(model_id, **kwargs)
    tokenizer = AutoTokenizer.from_pretrained(model_id, trust_remote_code=trust_remote_code)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    prepare_for_training(model, gradient_checkpointing)
    if vlm and freeze_vision is not False:
        freeze_vision_tower(model)
    return model, tokenizer


def prepare_for_training(model: torch.nn.Module, gradient_checkpointing: bool = True) -> torch.nn.Module:
    """Non-reentrant gradient checkpointing (works with frozen inputs) and no KV cache while training."""
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        for cfg in (
            getattr(model, "config", None),
            getattr(getattr(model, "config", None), "text_config", None),
        ):
            if cfg is not None and hasattr(cfg, "use_cache"):
                cfg.use_cache = False
    return model


def vision_modules(model: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """The vision tower and projector sub-modules of a VLM, by qualified name (outermost matches only)."""
    found: dict[str, torch.nn.Module] = {}
    for name, module in model.named_modules():
        leaf = name.rsplit(".", 1)[-1]
        if leaf in VISION_MODULE_NAMES and not any(name.startswith(f"{k}.") for k in found):
            found[name] = module
    return found


def freeze_vision_tower(model: torch.nn.Module) -> dict[str, int]:
    """Freeze every parameter of the vision tower/projector; return parameter counts (frozen, trainable).

    After this, ``[p for p in model.parameters() if p.requires_grad]`` (what ``psftlib.train`` optimizes) is the
    language model alone: decoder layers, embeddings and LM head.
    """
    modules = vision_modules(model)
    if not modules:
        raise ValueError(
            f"{type(model).__name__}: no vision module found (looked for {', '.join(VISION_MODULE_NAMES)})"
        )
    frozen = 0
    for module in modules.values():
        for p in module.parameters():
            p.requires_grad_(False)
            frozen += p.numel()
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"frozen": frozen, "trainable": trainable, "modules": len(modules)}


# A VLM's processor beside its weights: the image (and video) processor settings and the processor's own chat template.
# Our SFT/PSFT trainer saves the model and the tokenizer only, so :func:`copy_processor_files` carries these over from
# the base model (``psftlib.train.hub``) and from a cold start to its GRPO checkpoint (``psftlib.post``).
PROCESSOR_FILES = ("preprocessor_config.json", "video_preprocessor_config.json", "processor_config.json",
                   "chat_template.json")  # fmt: skip


def copy_processor_files(source: str | Path, checkpoint: str | Path) -> list[str]:
    """Copy :data:`PROCESSOR_FILES` of ``source`` (a hub id or a folder) that the folder ``checkpoint`` lacks; returns
    the names copied (none for a text-only model, which has none of them)."""
    from transformers.utils import cached_file

    copied = []
    for name in PROCESSOR_FILES:
        target = Path(checkpoint) / name
        if target.exists():
            continue
        found = cached_file(str(source), name, _raise_exceptions_for_missing_entries=False,
                            _raise_exceptions_for_connection_errors=False)  # fmt: skip
        if found:
            shutil.copyfile(found, target)
            copied.append(name)
    return copied


def load_processor(path: str | Path, tokenizer: Any = None) -> Any | None:
    """The image-text processor (``AutoProcessor``) of the VLM checkpoint folder ``path`` (or hub id: its cached
    snapshot); None when it has no ``preprocessor_config.json`` (a text-only model, or a VLM checkpoint saved without
    its processor).

    Qwen2-VL / Qwen2.5-VL processors need torchvision for their video processor, which the CPU environment lacks (its
    PyPI wheel does not load against the CPU torch): there, an images-only Qwen2.5-VL processor (the folder's image
    processor, ``tokenizer`` or the folder's, and its chat template) stands in; it has no video processor."""
    from transformers import AutoImageProcessor, AutoProcessor, AutoTokenizer
    from transformers.utils import cached_file

    if not Path(path).is_dir():  # a hub id: the snapshot holding its processor file, if any
        found = cached_file(str(path), "preprocessor_config.json", _raise_exceptions_for_missing_entries=False,
                            _raise_exceptions_for_connection_errors=False)  # fmt: skip
        path = Path(found).parent if found else Path(path)
    path = Path(path)
    if not (path / "preprocessor_config.json").exists():
        return None
    if importlib.util.find_spec("torchvision") is not None:
        return AutoProcessor.from_pretrained(str(path))
    tokenizer = tokenizer if tokenizer is not None else AutoTokenizer.from_pretrained(str(path))
    return _images_only_processor()(AutoImageProcessor.from_pretrained(str(path)), tokenizer,
                                    chat_template=tokenizer.chat_template)  # fmt: skip


def _images_only_processor() -> type:
    """``Qwen2_5_VLProcessor`` without its video processor (``ProcessorMixin`` takes its parts from ``__init__``'s
    parameter names, so this one has an image processor and a tokenizer only)."""
    from transformers import ProcessorMixin, Qwen2_5_VLProcessor

    class Qwen2_5_VLImagesProcessor(Qwen2_5_VLProcessor):
        video_processor = None

        def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
            self.image_token, self.video_token = "<|image_pad|>", "<|video_pad|>"
            self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
            self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)
            ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)

    return Qwen2_5_VLImagesProcessor
