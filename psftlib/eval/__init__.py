"""Evaluation: the lm-eval harness on any checkpoint or in-memory model, and what training needs of it.

harness.py    evaluate(): a model on named tasks through lm-eval; scores and every sample
training.py   the in-training evaluator (curves), checkpoint selection, the base model's step-0 point
verify.py     answer extraction and math-verify
judge.py      judge-based alignment scores (paper profile): templates, parsing, asking the judge
judge_chat.py the judge's chat backends (vLLM, transformers)
judge_scores.py  each benchmark's published scorer (AlpacaEval's official LC GLM, Arena-Hard BT, MT-Bench)
judge_run.py  python -m psftlib.eval.judge_run: one run's Table 3 judge scores (rules/judge.smk)
tasks/        our lm-eval task YAMLs and their scoring (utils.py)
__main__.py   python -m psftlib.eval
"""

from typing import Any

__all__ = ["TASK_DIR", "EvalConfig", "EvalError", "curves_fingerprint", "evaluate", "make_training_evaluator",
           "profile_eval_config", "read_initial_curves", "reuse_final_eval", "selection_score", "task_spec",
           "teacher_forced_stats", "write_initial_curves"]  # fmt: skip


def __getattr__(name: str) -> Any:
    # the exports load on first use, so `python -m psftlib.eval --help` (psft-eval) answers before torch loads
    if name in __all__:
        globals().update(_exports())
        return globals()[name]
    raise AttributeError(f"module 'psftlib.eval' has no attribute {name!r}")


def _exports() -> dict[str, Any]:
    """The package's names (imported here, outside ``__getattr__``, so psftlib.sources counts them as its imports)."""
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

    return {"TASK_DIR": TASK_DIR, "EvalConfig": EvalConfig, "EvalError": EvalError, "evaluate": evaluate,
            "task_spec": task_spec, "curves_fingerprint": curves_fingerprint,
            "make_training_evaluator": make_training_evaluator, "profile_eval_config": profile_eval_config,
            "read_initial_curves": read_initial_curves, "reuse_final_eval": reuse_final_eval,
            "selection_score": selection_score, "teacher_forced_stats": teacher_forced_stats,
            "write_initial_curves": write_initial_curves}  # fmt: skip
