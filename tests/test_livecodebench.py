"""LiveCodeBench (App. C.6): the task's prompt, code extraction, LCB's test decoding and the program runner
(psftlib.eval.code_exec / code_runner), the HF_ALLOW_CODE_EVAL refusal, and the task through lm-eval."""

from __future__ import annotations

import base64
import json
import pickle
import zlib
from pathlib import Path

import pytest
import yaml

from psftlib.eval import TASK_DIR, EvalConfig, evaluate
from psftlib.eval.code_exec import (
    ENV_VAR,
    SYSTEM_MESSAGE,
    CodeExecutionRefused,
    decode_tests,
    extract_code,
    lcb_prompt,
    problem_tests,
    run_tests,
    score_code_responses,
)
from psftlib.eval.code_runner import outputs_match

FIXTURE = Path(__file__).parent / "fixtures" / "paper_livecodebench.jsonl"
ROWS = [json.loads(line) for line in FIXTURE.read_text().splitlines()]
STDIN, CALL = problem_tests(ROWS[0]), problem_tests(ROWS[1])  # A+B (stdin) and twoSum (LeetCode, call-based)

SUM_OK = "a, b = map(int, input().split())\nprint(a + b)"
SUM_MAIN = "import sys\ndef main():\n    a, b = map(int, sys.stdin.read().split())\n    print(a + b)\n\nif __name__ == '__main__':\n    main()"  # fmt: skip
TWO_SUM = "class Solution:\n    def twoSum(self, nums: List[int], target: int) -> List[int]:\n        seen = {}\n        for i, x in enumerate(nums):\n            if target - x in seen:\n                return (seen[target - x], i)\n            seen[x] = i"  # fmt: skip


@pytest.fixture(autouse=True)
def allowed(monkeypatch):
    monkeypatch.setenv(ENV_VAR, "1")


# ---- data and prompt -------------------------------------------------------------------------------------------


def test_private_tests_in_lcbs_compressed_encoding_are_decoded():
    raw = ROWS[0]["private_test_cases"]
    assert not raw.lstrip().startswith(
        "["
    )  # the fixture holds them as the hub does: base64(zlib(pickle(json)))
    assert decode_tests(raw) == [{"input": "10 -4\n", "output": "6\n", "testtype": "stdin"},
                                 {"input": "1000000000 1000000000\n", "output": "2000000000\n", "testtype": "stdin"}]  # fmt: skip
    assert STDIN == {"inputs": ["1 2\n", "10 -4\n", "1000000000 1000000000\n"],
                     "outputs": ["3\n", "6\n", "2000000000\n"], "fn_name": None}  # fmt: skip
    assert (
        CALL["fn_name"] == "twoSum" and CALL["inputs"][0] == "[2, 7, 11, 15]\n9" and len(CALL["inputs"]) == 3
    )


def test_a_pickle_that_loads_anything_but_a_string_is_refused():
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    raw = base64.b64encode(zlib.compress(pickle.dumps(Evil()))).decode()
    with pytest.raises(ValueError, match="refusing to load builtins.print"):
        decode_tests(raw)
    with pytest.raises(ValueError, match="private_test_cases: neither JSON"):
        decode_tests("not base64 !")


def test_prompt_is_lcbs_chat_prompt_and_code_is_the_last_fenced_block():
    with_starter = lcb_prompt("Q?", "class Solution:\n    def f(self):\n        ")
    assert with_starter.startswith("### Question:\nQ?\n\n### Format: You will use the following starter code")
    assert "```python\nclass Solution:" in with_starter
    assert with_starter.endswith("### Answer: (use the provided format with backticks)\n\n")
    assert "Read the inputs from stdin" in lcb_prompt("Q?", "") and "# YOUR CODE HERE" in lcb_prompt("Q?", "")
    raw = yaml.load((TASK_DIR / "paper_livecodebench.yaml").read_text(), Loader=yaml.BaseLoader)
    assert raw["description"] == SYSTEM_MESSAGE  # LCB's system turn
    assert raw["generation_kwargs"]["until"] == []  # no stop at a blank line inside the code
    response = "<think>\n```python\nprint(1)\n```\n</think>\nFinal:\n```python\nprint(2)\nprint(3)\n```\ndone"
    assert extract_code(response) == "print(2)\nprint(3)"
    assert extract_code("no code here") == "" and extract_code("```python\nprint(1)") == ""


# ---- the runner ----------------------------------------------------------------------------------------------


def test_output_comparison_is_lcbs():
    assert outputs_match("3\n", "3") and outputs_match("  1 2 \n\n", "1 2")
    assert outputs_match("2.0\n", "2") and outputs_match("1.50", "1.5")  # equal as decimals
    assert not outputs_match("1.5000001", "1.5")  # no tolerance beyond decimal equality (as LCB)
    assert not outputs_match("3\n4", "3") and not outputs_match("yes", "YES")


@pytest.mark.parametrize("code", [SUM_OK, SUM_MAIN, "a, b = map(int, open(0).read().split())\nprint(a + b)",
                                  "import sys\nsys.stdout.write(str(sum(map(int, sys.stdin.buffer.read().split()))))",
                                  "import numpy as np\nprint(np.array(input().split(), dtype=np.int64).sum())"])  # fmt: skip
def test_a_correct_stdin_program_passes_every_test(code):
    assert run_tests(code, STDIN) == {"results": [True, True, True], "passed": True}


def test_a_runtime_error_is_reported():
    out = run_tests("a, b = map(int, input().split())\nprint(a // (b - b))", STDIN)
    assert out["results"] == [-4] and out["error"] == "ZeroDivisionError: integer division or modulo by zero"


@pytest.mark.parametrize(
    ("code", "code_of_failure"),
    [("a, b = map(int, input().split())\nprint(a - b)", -2),  # wrong answer
     ("a, b = map(int, input().split())\nprint(a + b if a < 5 else 0)", -2),  # right on the public test only
     ("raise ValueError('boom')", -4),  # crash
     ("def f(:\n    pass", -4),  # does not compile
     ("while True:\n    pass", -3),  # time limit
     ("import os\nos.remove('x')\nprint(3)", -4),  # disabled: removing files, processes, sockets
     ("import subprocess\nsubprocess.run(['true'])\nprint(3)", -4),
     ("import socket\nsocket.create_connection(('127.0.0.1', 9))\nprint(3)", -4),
     ("x = bytearray(8 << 30)\nprint(3)", -4)],  # beyond the memory limit
)  # fmt: skip
def test_a_failing_stdin_program_fails(code, code_of_failure):
    out = run_tests(code, STDIN, timeout_s=0.5)
    assert out["passed"] is False and out["results"][-1] == code_of_failure, out


def test_call_based_tests_call_the_named_method():
    assert run_tests(TWO_SUM, CALL)["passed"] is True  # a tuple is read as a list, as in LCB
    plain = "def twoSum(nums, target):\n    return [[i, j] for j in range(len(nums)) for i in range(j) if nums[i] + nums[j] == target][0]"  # fmt: skip
    assert run_tests(plain, CALL)["passed"] is True  # no class Solution: the module's function
    always = "class Solution:\n    def twoSum(self, nums, target):\n        return [0, 1]"
    assert run_tests(always, CALL)["results"] == [
        True,
        -2,
    ]  # right on the public test, wrong on a private one
    assert run_tests("class Solution:\n    def other(self):\n        pass", CALL)["passed"] is False


def test_a_program_that_ignores_the_alarm_is_killed_at_the_overall_timeout():
    code = "import signal\nsignal.signal(signal.SIGALRM, signal.SIG_IGN)\nwhile True:\n    pass"
    out = run_tests(code, STDIN, timeout_s=0.2, overall_s=1.5)
    assert out["results"] == [-1, -1, -1] and "overall timeout" in out["error"]


def test_pass_at_one_is_the_mean_over_samples():
    responses = [f"Here:\n```python\n{SUM_OK}\n```", "no code", "```python\nprint(3)\n```"]
    assert score_code_responses(responses, STDIN) == {"avg_at_k": 1 / 3, "pass_at_k": 1.0}


def test_generated_code_runs_only_with_the_env_var(monkeypatch):
    from datasets import Dataset

    from psftlib.eval.tasks.utils import docs_livecodebench

    monkeypatch.delenv(ENV_VAR)
    with pytest.raises(CodeExecutionRefused, match="set HF_ALLOW_CODE_EVAL=1"):
        run_tests(SUM_OK, STDIN)
    with pytest.raises(CodeExecutionRefused, match="HF_ALLOW_CODE_EVAL"):  # before any generation
        docs_livecodebench(Dataset.from_list(ROWS))
    monkeypatch.setenv(ENV_VAR, "true")  # lm-eval's convention: exactly "1"
    with pytest.raises(CodeExecutionRefused):
        score_code_responses([f"```python\n{SUM_OK}\n```"], STDIN)


# ---- the task --------------------------------------------------------------------------------------------------


def test_task_functions_score_the_fixture_rows():
    from datasets import Dataset

    from psftlib.eval.tasks.utils import docs_livecodebench, process_results_code

    docs = list(docs_livecodebench(Dataset.from_list(ROWS)))
    assert docs[0]["id"] == "abc000_a" and docs[1]["problem"].startswith("### Question:\nGiven an array")
    good, bad = f"```python\n{SUM_OK}\n```", "```python\nprint(0)\n```"
    assert process_results_code(docs[0], [[good, bad]]) == {"avg_at_k": 0.5, "pass_at_k": 1.0}
    assert process_results_code(docs[1], [f"```python\n{TWO_SUM}\n```"]) == {
        "avg_at_k": 1.0,
        "pass_at_k": 1.0,
    }


def test_task_runs_through_lm_eval_on_the_fixture(smoke_world, tmp_path):
    cfg = EvalConfig(repeats=2, max_gen_toks=8, batch_size=4)
    summary = evaluate(smoke_world / "world" / "base", ["paper_livecodebench"], cfg,
                       fixtures={"paper_livecodebench": FIXTURE}, out=tmp_path / "code")  # fmt: skip
    scores = summary["scores"]["paper_livecodebench"]
    assert scores["n"] == 2 and scores["k"] == 2
    assert 0.0 <= scores["avg_at_k"] <= scores["pass_at_k"] <= 1.0
    rows = [json.loads(line) for line in (tmp_path / "code.samples.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == ["abc000_a", "9001"] and "### Question:" in rows[0]["prompt"]
    assert SYSTEM_MESSAGE in rows[0]["prompt"]  # LCB's system turn (the task's description)


def test_the_stand_in_world_serves_the_fixture_under_the_hub_id(tmp_path):
    from datasets import load_dataset

    from psftlib.worlds.stand_ins import write_datasets

    write_datasets(tmp_path)
    raw = yaml.load((TASK_DIR / "paper_livecodebench.yaml").read_text(), Loader=yaml.BaseLoader)
    folder = tmp_path / raw["dataset_path"]
    rows = load_dataset(str(folder), raw["dataset_name"], split=raw["test_split"])
    assert rows["question_id"] == ["abc000_a", "9001"]
