"""Setting the model up for training and saving it: LoRA adapters, FSDP sharding, Hugging Face checkpoints."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch

from psftlib.config import ConfigError, TrainConfig
from psftlib.logprobs import ShardedRoot
from psftlib.worlds.build import save_pretrained_atomic

# peft and torch.distributed's FSDP / checkpoint modules are imported only when LoRA or sharding is on


def apply_lora(model: torch.nn.Module, cfg: TrainConfig) -> torch.nn.Module:
    """LoRA adapters of rank ``lora_r`` on every linear layer (peft); only they train."""
    try:  # deferred: peft is only needed with lora_r > 0
        from peft import LoraConfig, get_peft_model
    except ImportError as err:  # pragma: no cover - peft is in the lock
        raise ConfigError("lora_r > 0 needs the 'peft' package") from err
    config = LoraConfig(
        r=cfg.lora_r, lora_alpha=cfg.lora_alpha, target_modules="all-linear", task_type="CAUSAL_LM"
    )
    return get_peft_model(model, config)


def shard(model: torch.nn.Module, bf16: bool) -> ShardedRoot:
    """FSDP2 (``fully_shard``): each decoder layer one unit, then the rest (embeddings, norm, LM head) under a
    :class:`~psftlib.logprobs.ShardedRoot`, which the log-prob functions call through. The gradient reduction sums
    instead of averaging: each rank's loss is already divided by the global token count."""
    from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard

    policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if bf16 else None
    kwargs = {"mp_policy": policy} if policy is not None else {}
    layers = [m for m in model.modules() if type(m).__name__.endswith("DecoderLayer")]
    if not layers:
        raise ConfigError(f"fsdp: no *DecoderLayer modules in {type(model).__name__} to shard")
    for layer in layers:
        fully_shard(layer, **kwargs)
    root = fully_shard(ShardedRoot(model), **kwargs)
    for module in root.modules():
        if isinstance(module, FSDPModule):
            module.set_gradient_divide_factor(1.0)
            module.set_force_sum_reduction_for_comms(True)  # a plain SUM (gloo has no PREMUL_SUM)
    return root


def full_state_dict(model: ShardedRoot, rank: int) -> dict[str, torch.Tensor]:
    """The whole model's weights on rank 0's CPU under the wrapped model's own names ({} on the other ranks): a
    collective, which every rank must call for."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return {k.removeprefix("lm."): v for k, v in full.items()} if rank == 0 else {}  # ShardedRoot's prefix


class Unsharded:
    """Rank 0's whole, unsharded copy of a model that is about to be sharded, for in-training evaluation under
    FSDP: calling it with the sharded model gathers the current weights (every rank takes part) into the copy and
    returns it on rank 0 (None on the others), which then evaluates and saves it like any model while the other
    ranks wait (:class:`psftlib.train.curves.Curves` ends with a barrier). Between evaluations the copy waits on
    the CPU, so the GPU holds it only while it is evaluated."""

    def __init__(self, model: torch.nn.Module, rank: int):
        self.rank = rank
        self.device = next(model.parameters()).device
        self.copy = copy.deepcopy(model).to("cpu").requires_grad_(False) if rank == 0 else None

    def __call__(self, sharded: ShardedRoot) -> torch.nn.Module | None:
        full = full_state_dict(sharded, self.rank)
        if self.copy is None:
            return None
        self.copy.to("cpu").load_state_dict(full)
        return self.copy.to(self.device)

    def release(self) -> None:
        """Back to the CPU after an evaluation."""
        if self.copy is not None:
            self.copy.to("cpu")


def save_model(model: torch.nn.Module, tokenizer: Any, out: Path, lora: bool, rank: int = 0) -> None:
    """A Hugging Face checkpoint of ``model`` (LoRA adapters merged into a copy), written atomically by rank 0.
    A :class:`ShardedRoot` (FSDP) is gathered first, which every rank must call for."""
    if isinstance(model, ShardedRoot):
        full = full_state_dict(model, rank)
        if rank == 0:
            save_pretrained_atomic(model.lm, tokenizer, out, state_dict=full)
        return
    save_pretrained_atomic(copy.deepcopy(model).merge_and_unload() if lora else model, tokenizer, out)
