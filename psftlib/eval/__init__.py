"""Evaluation: the lm-eval harness on any checkpoint or in-memory model, and what training needs of it.

harness.py    evaluate(): a model on named tasks through lm-eval; scores and every sample
training.py   the in-training evaluator (curves), checkpoint selection, the base model's step-0 point
verify.py     answer extraction and math-verify
judge.py      judge-based alignment scores (paper profile)
tasks/        our lm-eval task YAMLs and their scoring (utils.py)
__main__.py   python -m psftlib.eval
"""

from psftlib.eval.harness import TASK_DIR, EvalConfig, EvalError, evaluate, task_spec
from psftlib.eval.training import (
    curves_fingerprint,
    make_training_evaluator,
    profile_eval_config,
    read_initial_curves,
    reuse_final_eval,
    selection_score,
    teacher_forced_stats,
    write_initial_curves,
)

__all__ = ["TASK_DIR", "EvalConfig", "EvalError", "curves_fingerprint", "evaluate", "make_training_evaluator",
           "profile_eval_config", "read_initial_curves", "reuse_final_eval", "selection_score", "task_spec",
           "teacher_forced_stats", "write_initial_curves"]  # fmt: skip
