"""DPO from a cold start (paper §4.3, Table 14: beta 0.01, lr 5e-7, 1 epoch, batch 64), through TRL's ``DPOTrainer``.

The reference model is the cold-start checkpoint, loaded by path and passed explicitly. Logged per optimizer step
(``metrics.jsonl``): loss, entropy, ``reward_chosen``, ``reward_rejected``, ``reward_margin``, ``reward_accuracy``
(Figure 6(b)), ``logp_chosen``, ``logp_rejected``. Outputs: ``metrics.jsonl``, ``eval.jsonl``, ``checkpoint/``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from psftlib.post.common import conversation, device_args, load_cold_start, run_trl

# trl is imported where it is used (it loads transformers' trainer stack, seconds to import)


@dataclasses.dataclass
class DPOSettings:
    beta: float = 0.01
    lr: float = 5e-7
    epochs: float = 1.0
    batch_size: int = 64  # pairs per optimizer step
    micro_batch_size: int = 8  # pairs per forward/backward
    max_length: int = 4096  # prompt + completion tokens
    seed: int = 0

    def trl_config(self, trl_dir: Path, processes: int = 1):
        """The equivalent ``DPOConfig``; ``batch_size`` pairs per optimizer step over all ``processes`` together."""
        from trl import DPOConfig

        if self.batch_size % (self.micro_batch_size * processes):
            raise ValueError(
                f"dpo: batch_size {self.batch_size} is not a multiple of micro_batch_size {self.micro_batch_size} x "
                f"{processes} processes"
            )
        return DPOConfig(
            output_dir=str(trl_dir),
            beta=self.beta, loss_type=["sigmoid"], learning_rate=self.lr,
            lr_scheduler_type="linear", warmup_steps=0, num_train_epochs=self.epochs,
            per_device_train_batch_size=self.micro_batch_size,
            gradient_accumulation_steps=self.batch_size // (self.micro_batch_size * processes),
            max_length=self.max_length,
            logging_steps=1, report_to=[], save_strategy="no", seed=self.seed, data_seed=self.seed,
            dataloader_num_workers=0, disable_tqdm=False, **device_args(),
        )  # fmt: skip


def run_dpo(
    cold_start: str | Path,
    pairs: list[dict[str, Any]],
    settings: DPOSettings,
    out_dir: str | Path,
    evaluator: Any = None,
    eval_every: int = 0,
) -> list[dict[str, float]]:
    """DPO from ``cold_start`` on preference ``pairs`` (rows with ``prompt``, ``chosen``, ``rejected``, ``system``)."""
    from trl import DPOTrainer

    def dataset_rows(_tokenizer: Any) -> list[dict[str, Any]]:
        return [{"prompt": conversation(r), "chosen": [{"role": "assistant", "content": r["chosen"]}],
                 "rejected": [{"role": "assistant", "content": r["rejected"]}]} for r in pairs]  # fmt: skip

    reference, _ = load_cold_start(cold_start)  # the cold start, loaded by path and passed explicitly
    return run_trl(DPOTrainer, cold_start, dataset_rows, settings.trl_config, out_dir, evaluator, eval_every,
                   ref_model=reference)  # fmt: skip
