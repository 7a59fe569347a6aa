"""psftlib: Proximal Supervised Fine-Tuning — the loss, the training loop, the small world."""

from typing import Any

__all__ = ["psft_loss", "sft_loss"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # the losses are imported on first use: `import psftlib.config` (the Snakefile, every notebook job's papermill
    # process) would otherwise pay ~1.2 s for torch
    if name in __all__:
        from psftlib import objectives

        return getattr(objectives, name)
    raise AttributeError(f"module 'psftlib' has no attribute {name!r}")
