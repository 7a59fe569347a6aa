"""The eval harness through lm-eval: small-world task offline, avg@k, answer checking, bad data, backends."""

import json
import shutil
import sys
from pathlib import Path

import pytest
import yaml

from psftlib.data import DataError
from psftlib.eval import TASK_DIR, EvalConfig, EvalError, evaluate, reuse_final_eval, task_spec
from psftlib.eval.harness import task_yaml
from psftlib.eval.verify import extract_answer, is_correct
from psftlib.worlds.small import SYSTEM_PROMPT

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.mark.parametrize(
    ("pred", "gold", "ok"),
    [("1/2", "0.5", True), ("\\frac12", "0.5", True), ("\\frac{1}{2}", "1/2", True), ("0.50", "\\frac{1}{2}", True),
     (" 15 ", "15", True), ("015", "15", True), ("16", "15", False), ("", "15", False), (None, "15", False)],
)  # fmt: skip
def test_math_verify_equivalent_forms(pred, gold, ok):
    assert is_correct(pred, gold) is ok


def test_integer_fast_path_agrees_with_math_verify():
    from math_verify import parse, verify

    pairs = [
        (p, g) for p in ("0", "7", "-3", "007", "-0", "12", "120") for g in ("0", "7", "-3", "12", "-12")
    ]
    for pred, gold in pairs:
        expected = bool(verify(parse(f"${gold}$"), parse(f"${pred}$")))
        assert is_correct(pred, gold) is expected, (pred, gold)
    assert is_correct("7.0", "7") and is_correct("14/2", "7")  # not plain integers: math-verify decides


def test_extract_takes_the_last_box_and_matches_braces():
    assert extract_answer("first \\boxed{3} then \\boxed{\\frac{1}{2}}") == "\\frac{1}{2}"
    assert extract_answer("so the answer is \\boxed{ 42 }") == "42"
    assert extract_answer("cut off \\boxed{4") is None
    assert extract_answer("no box: 42") is None


def test_world_task_uses_the_training_system_prompt():
    data = yaml.load((TASK_DIR / "world_target_3.yaml").read_text(), Loader=yaml.BaseLoader)
    assert data["description"] == SYSTEM_PROMPT


@pytest.fixture(scope="module")
def evaluated(smoke_world, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval") / "in_domain"
    cfg = EvalConfig(repeats=3, limit=3, max_gen_toks=24, batch_size=4, seed=0)
    summary = evaluate(
        smoke_world / "world" / "base", ["world_target_3"], cfg, data_dir=smoke_world / "data", out=out
    )
    return summary, out


def test_small_world_task_evaluates_offline_and_avg_at_k_is_the_mean_of_sample_correctness(evaluated):
    summary, out = evaluated
    on_disk = json.loads(out.with_suffix(".json").read_text())
    assert on_disk["scores"] == summary["scores"]
    rows = [json.loads(line) for line in out.with_suffix(".samples.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all(len(r["samples"]) == 3 for r in rows)
    per_problem = [sum(s["correct"] for s in r["samples"]) / 3 for r in rows]
    assert [r["avg_at_k"] for r in rows] == pytest.approx(per_problem)
    scores = summary["scores"]["world_target_3"]
    assert scores["avg_at_k"] == pytest.approx(sum(per_problem) / 3)
    assert scores["n"] == 3 and scores["k"] == 3 and "avg_at_k_stderr" in scores
    assert rows[0]["prompt"].startswith("<|im_start|>system\n" + SYSTEM_PROMPT)


def test_task_scoring_avg_pass_and_majority():
    import importlib.util

    spec = importlib.util.spec_from_file_location("task_utils", TASK_DIR / "utils.py")
    utils = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(utils)
    responses = [
        "1 + 4 = 5 . so the answer is \\boxed{ 5 }",
        "\\boxed{4}",
        "wait \\boxed{4} no \\boxed{5.0}",
        "none",
    ]
    scores = utils.process_results({"answer": "5"}, [responses])
    assert scores == {"avg_at_k": 0.5, "pass_at_k": 1.0, "maj_at_k": 1.0}
    assert (
        utils.process_results({"answer": "5"}, [["\\boxed{4}", "\\boxed{4}", "\\boxed{5}"]])["maj_at_k"]
        == 0.0
    )


def test_same_checkpoint_and_seed_give_identical_results(evaluated, smoke_world, tmp_path):
    summary, out = evaluated
    cfg = EvalConfig(repeats=3, limit=3, max_gen_toks=24, batch_size=4, seed=0)
    again = evaluate(smoke_world / "world" / "base", ["world_target_3"], cfg, data_dir=smoke_world / "data",
                     out=tmp_path / "again")  # fmt: skip
    assert again["scores"] == summary["scores"]
    assert (tmp_path / "again.samples.jsonl").read_text() == out.with_suffix(".samples.jsonl").read_text()


def test_malformed_task_data_is_refused_with_the_file_named(tmp_path):
    (tmp_path / "eval_target_3.jsonl").write_text(
        '{"prompt": "compute 1 + 1", "answer": "2"}\n{"prompt": "x"}\n'
    )
    with pytest.raises(DataError, match=r"eval_target_3.jsonl:2: field 'answer' is missing or empty"):
        task_spec("world_target_3", data_dir=tmp_path)
    with pytest.raises(DataError, match="nowhere/eval_target_3.jsonl: no such file"):
        task_spec("world_target_3", data_dir=tmp_path / "nowhere")


def test_vllm_backend_without_vllm_gives_a_clear_message(smoke_world):
    assert "vllm" not in sys.modules  # importing psftlib.eval imported no vLLM
    with pytest.raises(EvalError, match="needs the vllm package, which is not installed"):
        evaluate(smoke_world / "world" / "base", ["world_target_3"], EvalConfig(backend="vllm"),
                 data_dir=smoke_world / "data")  # fmt: skip


def test_bad_checkpoint_path_is_named(tmp_path, smoke_world):
    with pytest.raises(EvalError, match="not a Hugging Face checkpoint folder"):
        evaluate(tmp_path / "nothing", ["world_target_3"], data_dir=smoke_world / "data")


PAPER_TASKS = sorted(p.stem for p in TASK_DIR.glob("paper_*.yaml"))


@pytest.mark.parametrize("task", PAPER_TASKS)
def test_paper_task_yaml_runs_against_a_local_fixture_of_the_same_schema(
    task, smoke_world, tmp_path, monkeypatch
):
    monkeypatch.setenv("HF_ALLOW_CODE_EVAL", "1")  # paper_livecodebench runs the generated programs
    cfg = EvalConfig(repeats=2, max_gen_toks=4, batch_size=4, apply_chat_template=False)
    summary = evaluate(smoke_world / "world" / "base", [task], cfg, fixtures={task: FIXTURES / f"{task}.jsonl"},
                       out=tmp_path / task)  # fmt: skip
    scores = summary["scores"][task]
    assert scores["n"] == 2 and scores["k"] == 2
    rows = [json.loads(line) for line in (tmp_path / f"{task}.samples.jsonl").read_text().splitlines()]
    gold = {"paper_supergpqa": "C"}.get(task)
    assert all(r["target"] for r in rows) and (gold is None or rows[0]["target"] == gold)
    # the hub dataset id is still what the YAML loads by default
    raw = yaml.load((TASK_DIR / f"{task}.yaml").read_text(), Loader=yaml.BaseLoader)
    assert "/" in raw["dataset_path"]


@pytest.mark.parametrize("task", PAPER_TASKS)
def test_paper_generation_tasks_never_stop_at_a_blank_line(task):
    """lm-eval stops generation at its default ``until`` (the few-shot delimiter, a blank line) unless the YAML sets
    one: long reasoning would be cut at its first paragraph."""
    from lm_eval.api.task import TaskConfig

    raw = yaml.load((TASK_DIR / f"{task}.yaml").read_text(), Loader=yaml.BaseLoader)
    if raw["output_type"] != "generate_until":
        return
    kwargs = {k: v for k, v in raw.items() if k in ("task", "output_type", "generation_kwargs")}
    until = TaskConfig(**kwargs).generation_kwargs["until"]
    assert "\n\n" not in until and until in ([], "[]"), (task, until)


def test_evaluate_gives_an_in_memory_model_back_in_the_mode_it_found_it(smoke_world):
    from psftlib.worlds.build import load_checkpoint

    model, tok = load_checkpoint(smoke_world / "world" / "base")
    cfg = EvalConfig(repeats=1, limit=1, max_gen_toks=4, batch_size=1)
    for training in (True, False):
        model.train(training)
        evaluate(model, ["world_target_3"], cfg, tokenizer=tok, data_dir=smoke_world / "data")
        assert model.training is training


def test_a_selected_checkpoint_that_is_the_final_one_reuses_the_final_evaluation(tmp_path):
    run, final = tmp_path / "runs" / "r", tmp_path / "eval" / "r"
    (run / "selected").mkdir(parents=True)
    final.mkdir(parents=True)
    (final / "in_domain.json").write_text(json.dumps({"scores": {"t": {"avg_at_k": 0.5}}, "checkpoint": "x"}))
    (final / "in_domain.samples.jsonl").write_text('{"doc_id": 0}\n')
    out = tmp_path / "eval" / "r@selected"

    (run / "selected.json").write_text(json.dumps({"step": 4, "final_step": 8}))
    assert not reuse_final_eval(run / "selected", final, ["in_domain"], out)  # an earlier step: evaluate it
    assert not out.exists()

    (run / "selected.json").write_text(json.dumps({"step": 8, "final_step": 8}))
    assert reuse_final_eval(run / "selected", final, ["in_domain"], out)
    copied = json.loads((out / "in_domain.json").read_text())
    assert copied["scores"] == {"t": {"avg_at_k": 0.5}}
    assert copied["checkpoint"] == str(run / "selected") and copied["reused_from"] == str(final)
    assert (out / "in_domain.samples.jsonl").read_bytes() == (final / "in_domain.samples.jsonl").read_bytes()

    with pytest.raises(EvalError, match="out_of_domain.json: missing"):
        reuse_final_eval(run / "selected", final, ["out_of_domain"], out)


def test_initial_curves_are_refused_when_made_for_other_weights_or_settings(smoke_world_in_results, tmp_path):
    from psftlib.config import load_profile
    from psftlib.eval import read_initial_curves, write_initial_curves

    prof, base = load_profile("smoke"), smoke_world_in_results.base
    path = tmp_path / "initial_curves.json"
    scores = write_initial_curves(prof, base, path)
    assert scores and read_initial_curves(path, prof, base) == scores
    changed = load_profile("smoke")
    changed.data["eval"]["during_training"]["limit"] += 1
    with pytest.raises(EvalError, match="initial_curves.json: made for other"):
        read_initial_curves(path, changed, base)
    other = tmp_path / "other_base"
    shutil.copytree(base, other)
    weights = next(other.glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:-4] + b"\0\0\0\0")
    with pytest.raises(EvalError, match="made for other"):
        read_initial_curves(path, prof, other)


def test_the_eval_command_hands_vllm_the_checkpoint_folder_not_a_loaded_model(tmp_path, monkeypatch):
    """``python -m psftlib.eval`` with ``eval.backend: vllm`` (the paper profile): vLLM reads the folder (or hub id)
    itself, so the command must not load the weights first (the backend refuses an in-memory model)."""
    import argparse

    import psftlib.eval.harness as harness
    import psftlib.worlds.build as build
    from psftlib.eval.__main__ import evaluate_task_sets

    profile = yaml.safe_load((Path(__file__).parent.parent / "config" / "smoke.yaml").read_text())
    profile["eval"]["backend"] = "vllm"
    path = tmp_path / "smoke_vllm.yaml"
    path.write_text(yaml.safe_dump(profile))
    calls = []
    monkeypatch.setattr(
        harness, "evaluate", lambda model, tasks, cfg, **kw: calls.append((model, cfg.backend, kw))
    )
    monkeypatch.setattr(build, "load_checkpoint", lambda *a: pytest.fail("the weights were loaded for vLLM"))
    task_set = next(iter(profile["eval"]["task_sets"]))
    args = argparse.Namespace(profile=str(path), checkpoint="Qwen/Qwen2.5-7B-Instruct", task_sets=[task_set],
                              out_dir=str(tmp_path / "out"), reuse_final=None)  # fmt: skip
    evaluate_task_sets(args)
    assert [(model, backend, kw["tokenizer"]) for model, backend, kw in calls] == [
        ("Qwen/Qwen2.5-7B-Instruct", "vllm", None)
    ]
    assert calls[0][2]["checkpoint"] == "Qwen/Qwen2.5-7B-Instruct"


@pytest.mark.parametrize("name", ["smoke", "mini", "paper"])
def test_every_profile_eval_section_makes_an_eval_config(name):
    """The eval command and the in-training evaluator read each profile's ``eval:`` section: its DAG-level keys
    (``task_set_runs``, ``allow_code_execution``, ``during_training``) are not evaluation settings."""
    from psftlib.config import load_profile
    from psftlib.eval.training import profile_eval_config

    prof = load_profile(name)
    cfg, sets = profile_eval_config(prof)
    assert sets == prof.task_sets and cfg.backend == prof["eval"].get("backend", "hf")


def test_the_narrowed_lm_eval_index_finds_every_task_where_the_whole_index_does():
    """psftlib.eval.task_index builds lm-eval's index from the folders that name the evaluation's tasks (~0.7 s
    instead of ~6 s per job): for every lm-eval task the profiles name, each task it resolves to (a group's
    subtasks too) comes from the same YAML as in the whole index."""
    from lm_eval.tasks import TaskManager

    from psftlib.config import load_profile
    from psftlib.eval.task_index import task_manager

    names = sorted({t for p in ("smoke", "mini", "paper") for ts in load_profile(p).task_sets.values() for t in ts
                    if task_yaml(t)[0] is None})  # fmt: skip
    assert {"mmlu_pro", "cmmlu", "gpqa_diamond_cot_zeroshot", "mmlu_flan_n_shot_generative"} <= set(names)
    whole = TaskManager(include_path=str(TASK_DIR), include_defaults=True).task_index
    narrow = task_manager(TASK_DIR, names).task_index
    assert len(narrow) < len(whole) / 5  # narrowed, not the whole index again

    def resolved(index, name):  # name -> YAML path of it and of every task its groups list
        out, todo = {}, [name]
        while todo:
            entry = index[n := todo.pop()]
            out[n] = entry.yaml_path
            kids = (entry.cfg or {}).get("task", []) if entry.kind.name == "GROUP" else []
            todo += [
                k for k in (kids if isinstance(kids, list) else [kids]) if isinstance(k, str) and k not in out
            ]
        return out

    for name in names:
        assert resolved(narrow, name) == resolved(whole, name), name
    assert (
        task_manager(TASK_DIR, []).task_index.keys()
        == TaskManager(include_path=str(TASK_DIR), include_defaults=False).task_index.keys()
    )
