"""psftlib: Proximal Supervised Fine-Tuning — the loss, the training loop, the small world."""

from psftlib.objectives import psft_loss, sft_loss

__all__ = ["psft_loss", "sft_loss"]
__version__ = "0.1.0"
