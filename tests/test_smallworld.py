"""The small world's generators, rule checkers, tokenizer and splits."""

import random

import pytest

from psftlib.eval.verify import extract_answer, is_correct
from psftlib.worlds.build import build_tokenizer
from psftlib.worlds.small import (
    REFLECTIVE,
    SKILLS,
    check_format,
    check_skill,
    make_format_item,
    make_skill_item,
    make_target_item,
    vocabulary_corpus,
)


def _items(seed):
    rng = random.Random(seed)
    return ([make_skill_item(rng, s) for s in SKILLS for _ in range(20)] + [make_format_item(rng) for _ in range(40)]
            + [make_target_item(rng, n, 0.3) for n in (3, 4, 5) for _ in range(20)])  # fmt: skip


def test_generators_are_deterministic_in_the_seed():
    assert _items(0) == _items(0)
    assert _items(0) != _items(1)


def test_every_reference_answer_passes_its_own_checker():
    for item in _items(2):
        if item["skill"] == "target":
            assert is_correct(extract_answer(item["response"]), item["answer"])
        else:
            assert check_skill(item, item["response"]), item


@pytest.mark.parametrize(
    ("instruction", "n", "response", "ok"),
    [("brackets", 0, "[ 7 ]", True), ("brackets", 0, "7", False), ("brackets", 0, "[ 8 ]", False),
     ("repeat", 3, "7 ; 7 ; 7", True), ("repeat", 3, "7 ; 7", False), ("end_done", 0, "7 done", True),
     ("end_done", 0, "done 7", False), ("start_answer", 0, "answer 7", True), ("start_answer", 0, "7", False)],
)  # fmt: skip
def test_format_checker_accepts_and_rejects_hand_written_cases(instruction, n, response, ok):
    assert check_format(instruction, n, response, "7") is ok


def test_target_chains_are_long_varied_and_correct():
    rng = random.Random(3)
    items = [make_target_item(rng, 5, 0.5) for _ in range(50)]
    for it in items:
        assert it["response"].endswith(f"\\boxed{{ {it['answer']} }}")
        assert 0 <= int(it["answer"]) <= 19  # default max_value
    assert len({it["response"].split(" . ")[0] for it in items}) > 1  # openings vary
    assert any(w in it["response"] for it in items for w in REFLECTIVE)


def test_tokenizer_round_trips_and_has_single_tokens_for_reflective_words():
    tok = build_tokenizer(vocabulary_corpus())
    for word in REFLECTIVE:
        assert len(tok(word, add_special_tokens=False)["input_ids"]) == 1
    for item in _items(4):
        ids = tok(item["response"], add_special_tokens=False)["input_ids"]
        assert tok.unk_token_id not in ids
        assert tok.decode(ids) == " ".join(item["response"].split())


WORLD = {"levels": [3, 4, 5], "max_value": 19, "max_operand": 9, "n_eval_skill": 5, "n_eval_target": 4,
         "n_pretrain_per_skill": 10, "n_pretrain_format": 6, "n_pretrain_target": 4, "pretrain_aside_prob": 0.03,
         "n_train": 12, "n_heldout": 5, "aside_prob": 0.3, "n_rl": 6, "n_pref": 8}  # fmt: skip


def test_datasets_are_deterministic_disjoint_and_sized(tmp_path):
    from psftlib.data import write_jsonl
    from psftlib.worlds.small import make_datasets

    sets = make_datasets(WORLD, 0)
    write_jsonl(tmp_path / "a.jsonl", sets["train"])
    write_jsonl(tmp_path / "b.jsonl", make_datasets(WORLD, 0)["train"])
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()  # byte-identical JSONL
    assert make_datasets(WORLD, 1)["train"] != sets["train"]
    prompts = {name: {r["prompt"] for r in rows} for name, rows in sets.items()}
    names = list(prompts)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            shared = prompts[a] & prompts[b]
            if {a, b} == {
                "pretrain",
                "eval_arith",
            }:  # facts are knowledge: eval_arith asks facts the base was taught
                assert all(p.startswith("what is") for p in shared)
                continue
            assert not shared, (a, b, sorted(shared)[:3])
    assert len(sets["pretrain"]) == 5 * 10 + 6 + 4
    assert len(sets["train"]) == 12 and len(sets["heldout"]) == 5 and len(sets["eval_target_5"]) == 4
    assert len(sets["prefs"]) == 8 and len(sets["rl"]) == 6
    assert all(r["n_terms"] in (3, 4, 5) for r in sets["train"])
    assert {r["n_terms"] for r in sets["pretrain"] if r["skill"] == "target"} == {
        2
    }  # the base sees one step only


def test_preference_pairs_are_right_against_wrong_or_unformatted():
    from psftlib.worlds.small import make_datasets

    pairs = make_datasets({**WORLD, "n_pref": 40}, 3)["prefs"]
    assert {p["skill"] for p in pairs} == {"format", "target"}
    assert {p["rejected_kind"] for p in pairs} == {"wrong_answer", "ignored_instruction"}
    for pair in pairs:
        if pair["skill"] == "target":
            assert is_correct(extract_answer(pair["chosen"]), pair["answer"])
            assert not is_correct(extract_answer(pair["rejected"]), pair["answer"])
        else:
            assert check_skill(pair, pair["chosen"]) and not check_skill(pair, pair["rejected"])


def test_skill_tasks_score_through_lm_eval_scoring_function():
    import importlib.util

    from psftlib.eval import TASK_DIR

    spec = importlib.util.spec_from_file_location("task_utils", TASK_DIR / "utils.py")
    utils = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(utils)
    item = make_format_item(random.Random(5))
    good, bad = item["response"], "nonsense"
    assert utils.process_results_skill(item, [[good, bad]]) == {"avg_at_k": 0.5, "pass_at_k": 1.0}


def test_skill_tasks_run_through_the_harness(smoke_world, tmp_path):
    from psftlib.data import write_jsonl
    from psftlib.eval import TASK_DIR, EvalConfig, evaluate
    from psftlib.worlds.small import make_datasets

    sets = make_datasets({**WORLD, "n_eval_skill": 3}, 0)
    for name in ("eval_sort", "eval_format"):
        write_jsonl(tmp_path / f"{name}.jsonl", sets[name])
    summary = evaluate(smoke_world / "world" / "base", ["world_skill_sort", "world_skill_format"],
                       EvalConfig(max_gen_toks=8, batch_size=3), data_dir=tmp_path)  # fmt: skip
    assert {t: s["n"] for t, s in summary["scores"].items()} == {
        "world_skill_sort": 3,
        "world_skill_format": 3,
    }
    import yaml

    for path in TASK_DIR.glob("world_skill_*.yaml"):
        assert "description" not in yaml.load(
            path.read_text(), Loader=yaml.BaseLoader
        )  # skills: no system prompt


def test_data_card_counts_each_splits_unknown_tokens(tmp_path):
    from psftlib.data import TEXT_FIELDS
    from psftlib.worlds.build import write_card
    from psftlib.worlds.small import make_datasets

    sets = make_datasets(WORLD, 0)
    sets["heldout"][0] = {**sets["heldout"][0], "response": "zyzzyva " + sets["heldout"][0]["response"]}
    tok = build_tokenizer(vocabulary_corpus())
    profile = {"world": WORLD, "pretrain": {"epochs": 1, "batch_size": 2, "lr": 1e-3}, "seed": 0,
               "profile": "test", "model": {}}  # fmt: skip
    write_card(tmp_path / "card.md", profile, sets, tok, 1000)
    rows = {
        line.split(" | ")[0].strip("| "): line for line in (tmp_path / "card.md").read_text().splitlines()
    }
    n_heldout = sum(len(tok(r[k], add_special_tokens=False)["input_ids"]) for r in sets["heldout"]
                    for k in TEXT_FIELDS if r.get(k))  # fmt: skip
    assert (
        f"| 1 of {n_heldout} (" in rows["heldout"]
    )  # the one word outside the vocabulary, counted where it is
    assert "| 0 of " in rows["train"] and "| 0 of " in rows["prefs"]
