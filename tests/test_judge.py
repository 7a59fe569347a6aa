"""Table 3's judge (psftlib.eval.judge, judge_scores, judge_run; rules/judge.smk), offline: templates and parsing,
each benchmark's published scorer on hand-built verdicts (AlpacaEval's official LC GLM, arena-hard-auto's
Bradley-Terry, FastChat's means), and the whole judge run on a tiny random transformers model as judge and judged.

AlpacaEval's GLM downloads ``df_gamed.csv`` (its gamed baselines and instruction difficulties) from the hub; offline,
the test serves a hand-built one of the same columns in its place (``hub_gamed``)."""

from __future__ import annotations

import hashlib
import json
import string
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from psftlib.eval import judge, judge_run, judge_scores

ROOT = Path(__file__).resolve().parent.parent
FIX = ROOT / "tests" / "fixtures" / "paper"
N = 40  # instructions of the hand-built AlpacaEval sets


@pytest.fixture
def hub_gamed(tmp_path, monkeypatch):
    """AlpacaEval's hub file df_gamed.csv, hand-built: two gamed baselines (verbose / concise, preference 0.5) on N
    instructions of known difficulty; the official module's hub download returns it."""
    rows = [{"model": g, "index": i, "instruction_difficulty": (i % 5 - 2) / 2, "not_gamed_baseline": False,
             "std_delta_len": sign * 1.5, "preference": 0.5}
            for g, sign in (("gamed_verbose", -1), ("gamed_concise", 1)) for i in range(N)]  # fmt: skip
    path = tmp_path / "df_gamed.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    glm = judge_scores._glm_winrate()
    monkeypatch.setattr(glm, "hf_hub_download", lambda **kw: str(path))
    return glm


def _annotations(lengths, prefs, generator="model"):
    return [{"index": i, "instruction": f"q{i}", "output_1": "b" * 100, "output_2": "m" * n, "generator_1": "base",
             "generator_2": generator, "preference": 1.0 + p} for i, (n, p) in enumerate(zip(lengths, prefs, strict=True))]  # fmt: skip


# ---- AlpacaEval 2: the official length-controlled win rate ----------------------------------------------------------


def test_official_lc_of_the_baseline_against_itself_is_50(hub_gamed):
    lengths = [60 + 2 * i for i in range(N)]
    m = judge_scores.alpaca_eval_scores(_annotations(lengths, [0.3] * N, generator="base"))
    assert m["length_controlled_winrate"] == 50.0  # get_length_controlled_winrate: 0.5 "by construction"
    assert m["win_rate"] == pytest.approx(30.0)  # AbsoluteScoringRule: the mean preference for output_2


def test_official_lc_removes_a_length_preference(hub_gamed):
    # the judge prefers the longer output; the model is longer on 3 instructions in 4: a raw win rate far above 50
    lengths = [160 if i % 4 else 40 for i in range(N)]
    prefs = [0.85 if i % 4 else 0.15 for i in range(N)]
    m = judge_scores.alpaca_eval_scores(_annotations(lengths, prefs))
    assert m["win_rate"] == pytest.approx(100 * sum(prefs) / N)
    assert abs(m["length_controlled_winrate"] - 50) < abs(m["win_rate"] - 50) - 10, m
    # a preference that ignores length keeps its win rate
    flat = judge_scores.alpaca_eval_scores(_annotations([60 + 3 * i for i in range(N)], [0.8] * N))
    assert flat["length_controlled_winrate"] > 65.0 and flat["n_total"] == N


def test_alpaca_eval_calls_the_official_function(hub_gamed, monkeypatch):
    calls = []
    official = hub_gamed.get_length_controlled_winrate
    monkeypatch.setattr(
        hub_gamed, "get_length_controlled_winrate", lambda *a, **k: calls.append(k) or official(*a, **k)
    )
    ae = judge.read_questions("alpaca_eval", FIX / "alpaca_eval.json")
    outs = ["model answer one", "model answer two", "model three"]

    class Prefers:  # the judge prefers the model's output wherever it is shown
        def choice_probs(self, convs, options):
            return [dict(zip(options, (0.9, 0.1) if '"""model' in c[-1]["content"].split('"m"')[1][:40]
                             else (0.1, 0.9), strict=True)) for c in convs]  # fmt: skip

    res = judge.alpaca_eval(Prefers(), ae, outs, [q["baseline"] for q in ae], generator="psft")
    assert calls and calls[0]["glm_name"] == "length_controlled_v1"
    assert res["win_rate"] == pytest.approx(90.0) and [a["index"] for a in res["annotations"]] == [0, 1, 2]
    assert all(a["preference"] == pytest.approx(1.9) for a in res["annotations"])


def test_alpaca_eval_prompt_is_alpaca_evals_own():
    t = judge.load_templates()["alpaca_eval"]["preference"]
    assert t["system"].startswith("You are a highly efficient assistant")
    user = judge.render(t, instruction="INSTR", output_m="FIRST", output_big_m="SECOND")[-1]["content"]
    assert '"instruction": """INSTR"""' in user and user.index("FIRST") < user.index('"M"') < user.index(
        "SECOND"
    )


# ---- templates and questions ----------------------------------------------------------------------------------------


# sha256 of each upstream text (computed from the upstream files at the commits named in judge_templates.yaml's header)
UPSTREAM_SHA256 = {
    ("mt_bench", "single", "system"): "75357d685f238b6afd7738be9786fdafde641eb6ca9a3be7471939715a68a4de",
    ("mt_bench", "single", "prompt"): "0935c7ff79f38d3f9b135e14b2cf3bc05ddfbcb96cfd4094b1681a8044e9ccd0",
    ("mt_bench", "single_reference", "system"): "75357d685f238b6afd7738be9786fdafde641eb6ca9a3be7471939715a68a4de",
    ("mt_bench", "single_reference", "prompt"): "8e11dbbf609a3d6f69cc75c8f1f2a4932160a64499f6fd6e5f3916e8e54aa2b7",
    ("mt_bench", "multi_turn", "system"): "d1e77aa107f02dd829e2e9caee2ad227d0a501853fefa74ccd4b51f758cbd432",
    ("mt_bench", "multi_turn", "prompt"): "33067cf18206b4abdc13b27f53b5240b4ef64e9efa5a2fb4b51d91fb0aca60fd",
    ("mt_bench", "multi_turn_reference", "system"): "4b8fe8086dbdf4a8bc64cdeec10ff6b348ec6c0578d668ad01604e47ae517baf",
    ("mt_bench", "multi_turn_reference", "prompt"): "6a2b8ad2961c275c0afd7206cbf6bb22379309ded1032798464f3f4ae5176b03",
    ("arena_hard", "pairwise", "system"): "03f68010febd7a6405102ef882b4dd5a9700c56b2e1ff286d3b38f5d3a929bbf",
    ("arena_hard", "pairwise", "prompt"): "b0260904bc964e0d07d20581309c53fce4879159080fee42d8c91f8a80c48df4",
}  # fmt: skip
# FastChat data/mt_bench/reference_answer/gpt-4.jsonl (git blob 8b66387a3129cbb117178fe515491df553dd52df)
REFERENCE_SHA256 = "f957a5bc977badb66885ec970e6cd08527845780313f0995764260e5777b9b3f"
FIELDS = {  # each template's str.format fields: the upstream names
    ("mt_bench", "single"): {"question", "answer"},
    ("mt_bench", "single_reference"): {"question", "ref_answer_1", "answer"},
    ("mt_bench", "multi_turn"): {"question_1", "answer_1", "question_2", "answer_2"},
    ("mt_bench", "multi_turn_reference"): {"question_1", "answer_1", "question_2", "answer_2", "ref_answer_1",
                                           "ref_answer_2"},
    ("arena_hard", "pairwise"): {"question_1", "answer_1", "answer_2"},
}  # fmt: skip


def test_templates_are_the_upstream_texts():
    t = judge.load_templates()
    got = {
        k: hashlib.sha256(t[b][kind][f].encode()).hexdigest() for k in UPSTREAM_SHA256 for b, kind, f in [k]
    }
    assert got == UPSTREAM_SHA256
    assert [t["mt_bench"][k]["name"] for k in judge.FASTCHAT_NAMES.values()] == list(judge.FASTCHAT_NAMES)
    assert t["mt_bench"]["reference_categories"] == ["math", "reasoning", "coding"]  # common.py NEED_REF_CATS
    assert tuple(t["mt_bench"]["rating_patterns"]) == judge.RATING_PATTERNS
    assert t["arena_hard"]["regex_pattern"] == judge.VERDICT_PATTERN == r"\[\[([AB<>=]+)\]\]"
    assert (t["arena_hard"]["number_of_judgment_attempts"], t["arena_hard"]["weight"]) == (2, 3)
    ref = ROOT / "psftlib" / "eval" / "mt_bench_reference_gpt-4.jsonl"
    assert hashlib.sha256(ref.read_bytes()).hexdigest() == REFERENCE_SHA256


def test_every_template_slot_is_filled():
    t = judge.load_templates()
    for (bench, kind), fields in FIELDS.items():
        tpl = t[bench][kind]
        assert {f for _, f, _, _ in string.Formatter().parse(tpl["prompt"]) if f} == fields, (bench, kind)
        msgs = judge.render(tpl, **{f: f"<{f.upper()}>" for f in fields})
        assert [m["role"] for m in msgs] == ["system", "user"] and msgs[0]["content"] == tpl["system"]
        assert all(f"<{f.upper()}>" in msgs[1]["content"] for f in fields) and "{" not in msgs[1]["content"]
    with pytest.raises(judge.JudgeError, match="needs field 'answer'"):
        judge.render(t["mt_bench"]["single"], question="Q?")


def test_parse_official_format_outputs():
    # arena-hard-auto v0.1 judgments end as its system prompt asks; get_score: one distinct label, else none
    assert judge.parse_verdict("...\n\nMy final verdict is Assistant B is slightly better: [[B>A]].") == "B>A"
    assert judge.parse_verdict("My final verdict is tie: [[A=B]]") == "A=B"
    assert judge.parse_verdict("[[A>>B]] then [[A>>B]]") == "A>>B"
    assert judge.parse_verdict("[[A>B]] or maybe [[B>A]]") is None and judge.parse_verdict("tie") is None
    assert judge.verdict_of("no label") == (None, True) and judge.verdict_of("[[A>B]] [[B>A]]") == (
        None,
        False,
    )
    assert judge.parse_verdict("[[B=A]]") == "B=A"  # recorded as upstream; its scorer gives it no battle
    assert judge_scores.arena_hard_battles([("B=A", "A=B")], "m")["winner"].tolist() == ["tie"]
    # FastChat single grading: 'strictly following this format: "[[rating]]", for example: "Rating: [[5]]"'
    assert judge.parse_rating("The answer is correct and clear.\n\nRating: [[9]]") == 9.0
    assert judge.parse_rating("Rating: [[7.5]] ... final Rating: [[6]]") == 7.5  # FastChat: the first match
    assert judge.parse_rating("Rating: [9]") == 9.0 and judge.parse_rating('format "[[rating]]"') is None


def test_fastchat_templates_convert(tmp_path):
    rows = [{"name": n, "system_prompt": f"S {n}", "prompt_template": f"P {n}", "output_format": "[[rating]]"}
            for n in judge.FASTCHAT_NAMES] + [{"name": "pair-v2", "system_prompt": "S", "prompt_template": "x"}]  # fmt: skip
    (tmp_path / "judge_prompts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    got = judge.templates_from_fastchat(tmp_path / "judge_prompts.jsonl")
    assert got["single_reference"] == {"name": "single-math-v1", "system": "S single-math-v1",
                                       "prompt": "P single-math-v1", "output_format": "[[rating]]"}  # fmt: skip
    (tmp_path / "judge_prompts.jsonl").write_text(json.dumps(rows[0]) + "\n")
    with pytest.raises(judge.JudgeError, match="missing FastChat templates"):
        judge.templates_from_fastchat(tmp_path / "judge_prompts.jsonl")


def test_read_questions_of_each_benchmark():
    mt = judge.read_questions("mt_bench", FIX / "mt_bench_question.jsonl")
    assert [len(q["turns"]) for q in mt] == [2, 2] and mt[1]["reference"] == ["6", "2.5"]
    ah = judge.read_questions("arena_hard", FIX / "arena_hard_question.jsonl")
    assert ah[0]["turns"][0].startswith("Write a Python function") and ah[0]["category"] == "arena-hard-v0.1"
    ae = judge.read_questions("alpaca_eval", FIX / "alpaca_eval.json")
    assert ae[2]["turns"] == ["Suggest a name for a bakery."] and ae[2]["baseline"] == "Rise & Shine Bakery."


# ---- Arena-Hard and MT-Bench ------------------------------------------------------------------------------------------


class _Scripted:
    def __init__(self, replies):
        self.replies, self.seen = list(replies), []

    def chat(self, conversations, temperature, top_p, max_new_tokens):
        self.seen += list(conversations)
        return [self.replies.pop(0) for _ in conversations]


def test_arena_hard_bradley_terry_of_weighted_battles():
    ah = judge.read_questions("arena_hard", FIX / "arena_hard_question.jsonl")
    # q1: game 1 (baseline A) B>A, game 2 (model A) A>B: two model wins; q2: A>>B (baseline, weight 3), then a game
    # without a verdict: asked once more (number_of_judgment_attempts 2), still none -> dropped
    sj = _Scripted(["[[B>A]]", "[[A>B]]", "[[A>>B]]", "garbled", "still nothing"])
    res = judge.arena_hard(sj, ah, ["m1", "m2"], ["b1", "b2"], bootstrap_rounds=20)
    assert res["battles"] == 5 and res["unparsed"] == 1 and not sj.replies
    assert res["win_rate"] == pytest.approx(
        40.0, abs=1e-3
    )  # two players: the BT win rate is the share of wins
    assert 0.0 <= res["ci_low"] <= res["win_rate"] <= res["ci_high"] <= 100.0
    # game 1 shows the baseline as A, game 2 the model; the second ask follows the first reply and upstream's message
    first, second = sj.seen[0][1]["content"], sj.seen[1][1]["content"]
    assert first.index("b1") < first.index("m1") and second.index("m1") < second.index("b1")
    assert first.startswith("<|User Prompt|>\n" + ah[0]["turns"][0])
    assert [m["content"] for m in sj.seen[-1][-2:]] == ["garbled", "continue your judgment and finish by outputting "
                                                        "a final verdict label"]  # fmt: skip
    assert res["judgments"][3] == "\ngarbled\nstill nothing"  # gen_judgment: judgment += "\n" + reply
    ties = judge_scores.arena_hard_battles([("A=B", "B>A"), ("A>B", "B=A")], "m")
    assert list(ties["winner"]) == ["tie", "model_a", "model_a"]  # show_result.py: B=A gives no battle
    assert judge_scores.arena_hard_scores(ties, "m", num_rounds=10)["win_rate"] == pytest.approx(
        100 / 6, abs=1e-3
    )


def test_arena_hard_interval_is_percentiles_of_ratings():
    battles = judge_scores.arena_hard_battles(
        [("B>A", "A>B")] * 6 + [("A>B", "A=B")] * 4 + [("A=B", "B>>A")], "m"
    )
    res = judge_scores.arena_hard_scores(battles, "m", num_rounds=30)
    rng = np.random.RandomState(
        42
    )  # show_result.py: np.random.seed(42), battles.sample(frac=1.0, replace=True)
    boot = [
        judge_scores.compute_mle_elo(battles.sample(frac=1.0, replace=True, random_state=rng))
        for _ in range(30)
    ]
    ratings = [b["m"] - b[judge_scores.ARENA_BASELINE] + 1000 for b in boot]
    for key, q in (("ci_low", 2.5), ("ci_high", 97.5)):  # get_win_rate_column of the rating percentile
        assert res[key] == pytest.approx(100 / (1 + 10 ** ((1000 - np.percentile(ratings, q)) / 400)))
    one_sided = judge_scores.arena_hard_scores(
        judge_scores.arena_hard_battles([("B>A", "A>B")] * 3, "m"), "m"
    )
    assert (one_sided["win_rate"], one_sided["ci_low"], one_sided["ci_high"]) == (100.0, 100.0, 100.0)


def test_mt_bench_rating_as_fastchat():
    mt = judge.read_questions("mt_bench", FIX / "mt_bench_question.jsonl")
    sj = _Scripted(["Rating: [[8]]", "Rating: [[6]]", "Rating: [[10]]", "no rating"])
    res = judge.mt_bench(sj, mt, [["a1", "a2"], ["b1", "b2"]])
    assert (res["turn1"], res["turn2"], res["unparsed_turn2"]) == (9.0, 6.0, 1)
    t = judge.load_templates()["mt_bench"]
    # writing: single-v1 / single-v1-multi-turn; math: single-math-v1 / single-math-v1-multi-turn with both references
    used = [next(k for k in judge.FASTCHAT_NAMES.values() if c[0]["content"] == t[k]["system"]
                 and c[1]["content"].startswith(t[k]["prompt"].split("{")[0])) for c in sj.seen]  # fmt: skip
    assert used == ["single", "multi_turn", "single_reference", "multi_turn_reference"]
    assert "[The Start of Reference Answer]\n6\n[The End of Reference Answer]" in sj.seen[2][1]["content"]
    assert (
        "### Reference answer:\n6\n" in sj.seen[3][1]["content"]
        and "### Reference answer:\n2.5\n" in sj.seen[3][1]["content"]
    )
    mt[1]["reference"] = None  # FastChat's check_data: a reference category needs its reference answers
    with pytest.raises(judge.JudgeError, match="no reference answer for question\\(s\\) \\['111'\\]"):
        judge.mt_bench(_Scripted([]), mt, [["a1", "a2"], ["b1", "b2"]])
    mt[1]["category"] = "writing"
    assert judge.mt_bench(_Scripted(["[[1]]"] * 4), mt, [["a1", "a2"], ["b1", "b2"]])["turn1"] == 1.0


def test_mt_bench_reference_answers_are_fastchats_gpt4():
    refs = judge.read_answer_turns(ROOT / "psftlib" / "eval" / "mt_bench_reference_gpt-4.jsonl")
    assert sorted(map(int, refs)) == list(range(101, 131)) and all(len(r) == 2 for r in refs.values())
    spec = {
        "questions": str(FIX / "mt_bench_question.jsonl"),
        "reference_answers": "psftlib/eval/mt_bench_reference_gpt-4.jsonl",
    }
    qs = judge_run.questions_of(
        "mt_bench", spec
    )  # replaces the questions' own "reference" field, as FastChat
    assert qs[1]["id"] == "111" and qs[1]["reference"] == refs["111"] and qs[0]["reference"] is None


# ---- the judge run (rules/judge.smk's command) on a tiny random model --------------------------------------------------


def _tiny_chat_model(folder: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    tok = Tokenizer(models.WordLevel(unk_token="<|unk|>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    special = ["<|endoftext|>", "<|unk|>", "<|im_start|>", "<|im_end|>"]
    tok.train_from_iterator(
        ["system user assistant m M [[8]] [[A>B]] 1 2 3"], trainers.WordLevelTrainer(special_tokens=special)
    )
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<|unk|>", pad_token="<|endoftext|>",
                                   eos_token="<|im_end|>")  # fmt: skip
    fast.chat_template = ("{% for m in messages %}{{ '<|im_start|> ' + m['role'] + ' ' + m['content'] + ' <|im_end|> ' }}"
                          "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|> assistant ' }}{% endif %}")  # fmt: skip
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(vocab_size=len(fast), hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                                         pad_token_id=fast.pad_token_id, eos_token_id=fast.eos_token_id,
                                         bos_token_id=None))  # fmt: skip
    model.save_pretrained(folder)
    fast.save_pretrained(folder)


def test_judge_run_on_a_tiny_random_model(tmp_path):
    """rules/judge.smk's command on the profile's settings, offline: the fixtures' questions, a tiny random model as
    judged model and judge (transformers), AlpacaEval's GLM data from a local df_gamed.csv (glm_data)."""
    _tiny_chat_model(tmp_path / "tiny")
    ah = [json.loads(line) for line in (FIX / "arena_hard_question.jsonl").read_text().splitlines()]
    (tmp_path / "gpt-4-0314.jsonl").write_text("".join(json.dumps(
        {"question_id": q["question_id"], "choices": [{"turns": [{"content": "1 2"}]}]}) + "\n" for q in ah))  # fmt: skip
    prof = yaml.safe_load((ROOT / "config" / "paper.yaml").read_text())
    bench = prof["paper"]["judge"]["benchmarks"]
    bench["mt_bench"].update(questions=str(FIX / "mt_bench_question.jsonl"), max_new_tokens=3)
    bench["alpaca_eval"].update(questions=str(FIX / "alpaca_eval.json"), config=None, max_new_tokens=3,
                                glm_data=str(FIX / "alpaca_eval_df_gamed.csv"))  # fmt: skip
    bench["arena_hard"].update(questions=str(FIX / "arena_hard_question.jsonl"), max_new_tokens=3, bootstrap_rounds=5,
                               baseline_answers=str(tmp_path / "gpt-4-0314.jsonl"))  # fmt: skip
    prof["paper"]["judge"].update(
        model=str(tmp_path / "tiny"), backend="hf", max_judge_tokens=3, batch_size=2
    )
    (tmp_path / "paper.yaml").write_text(yaml.safe_dump(prof))
    out = tmp_path / "eval" / "align_psft+dpo" / "judge.json"
    res = judge_run.judge_run(str(tmp_path / "paper.yaml"), "align_psft+dpo", str(tmp_path / "tiny"), out)
    scores = json.loads(out.read_text())["scores"]
    assert scores == json.loads(json.dumps(res["scores"])) and set(scores) == set(judge_run.BENCHMARKS)
    ae = scores["alpaca_eval"]
    assert (
        0.0 <= ae["lc_win_rate"] <= 100.0 and 0.0 <= ae["win_rate"] <= 100.0 and ae["metrics"]["n_total"] == 3
    )
    samples = json.loads(out.with_suffix(".samples.json").read_text())
    assert len(samples["alpaca_eval"]["annotations"]) == 3 and len(samples["mt_bench"]["judgments"]) == 4
    assert len(samples["arena_hard"]["judgments"]) == 4 and [
        len(a) for a in samples["mt_bench"]["answers"]
    ] == [2, 2]
    per_game = [v for q in samples["arena_hard"]["per_question"].values() for v in q.values()]
    assert scores["arena_hard"]["unparsed"] == sum(v is None for v in per_game) and len(per_game) == 4


def test_paper_dag_has_a_judge_job_per_table3_run():
    res = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--configfile", "config/paper.yaml"], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    jobs = {line.split()[0]: int(line.split()[1]) for line in res.stdout.splitlines()
            if len(line.split()) == 2 and line.split()[1].isdigit()}  # fmt: skip
    assert jobs.get("judge") == 6  # align_sft, align_psft, align_psft_prolong and each +dpo (Table 3's rows)
    for run in ("align_sft", "align_psft_prolong+dpo"):
        assert f"results/eval/paper/{run}/judge.json" in res.stdout
