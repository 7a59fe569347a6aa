"""LiveCodeBench scoring (Jain et al., 2025): generated Python programs run against a problem's tests.

The task (``psftlib/eval/tasks/paper_livecodebench.yaml``) prompts with LiveCodeBench's own code-generation prompt
for chat models; a response's program is the text between its last two lines containing a code fence
(:func:`extract_code`, LCB's ``extract_code``); a program passes when every public and private test of its problem
passes (:func:`run_tests`), and pass@1 is the mean of that over the samples and problems. The tests' semantics
(stdin/stdout comparison, call-based LeetCode tests, 6 s per test) follow LCB's ``testing_util.py`` (MIT licence),
re-implemented in :mod:`psftlib.eval.code_runner`. lighteval 0.13.0, which ships LCB's scorer, was not used: it pins
``termcolor==2.3.0``, ``nltk==3.9.1`` and ``latex2sympy2_extended==1.0.6``, which conflict with our lock.

Generated code runs only when ``HF_ALLOW_CODE_EVAL=1`` is set (lm-eval's and ``evaluate``'s convention for code
tasks), each program in a child Python process (``python -I``, its own session, a fresh temporary working folder,
an environment of only ``PATH``/``LANG``/``HOME``, stdin closed), with an address-space limit, a wall-clock limit
per test and an overall one after which the whole process group is killed. This protects against accidents, not
against hostile code: run evaluations of untrusted models in a container or VM.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import pickle
import signal
import subprocess
import sys
import tempfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ENV_VAR = "HF_ALLOW_CODE_EVAL"
TIMEOUT_S = 6.0  # LCB's per-test timeout
MEMORY_MB = 4096  # LCB's reliability guard names 4 GB (its runner does not pass it); ours is applied
RUNNER = Path(__file__).resolve().parent / "code_runner.py"


class CodeExecutionRefused(RuntimeError):
    """Generated code would run but ``HF_ALLOW_CODE_EVAL=1`` is not set."""


def require_code_eval() -> None:
    """Refuse to go on unless the user allowed running generated code (``HF_ALLOW_CODE_EVAL=1``)."""
    if os.environ.get(ENV_VAR) != "1":
        raise CodeExecutionRefused(
            f"the LiveCodeBench task (paper_livecodebench) runs model-generated Python code; set {ENV_VAR}=1 in "
            f"the environment to allow it (found {ENV_VAR}={os.environ.get(ENV_VAR)!r}). Each program runs in a "
            "child process with time and memory limits, which is not a sandbox: prefer a container or VM."
        )


# ---- the prompt -----------------------------------------------------------------------------------------------

# LCB's prompt for chat models (lcb_runner/prompts/code_generation.py: SYSTEM_MESSAGE_GENERIC as the system turn,
# get_generic_question_template_answer as the user turn); the task YAML's ``description`` is SYSTEM_MESSAGE.
SYSTEM_MESSAGE = (
    "You are an expert Python programmer. You will be given a question (problem specification) and will generate a "
    "correct Python program that matches the specification and passes all tests."
)
WITH_STARTER = (
    "You will use the following starter code to write the solution to the problem and enclose your code within "
    "delimiters."
)
WITHOUT_STARTER = (
    "Read the inputs from stdin solve the problem and write the answer to stdout (do not directly test on the sample "
    "inputs). Enclose your code within delimiters as follows. Ensure that when the python program runs, it reads the "
    "inputs, runs the algorithm and writes output to STDOUT."
)


def lcb_prompt(question: str, starter_code: str | None) -> str:
    """LCB's user turn for a problem: the question, the format (starter code or stdin/stdout), the answer cue."""
    prompt = f"### Question:\n{question}\n\n"
    if starter_code:
        prompt += f"### Format: {WITH_STARTER}\n```python\n{starter_code}\n```\n\n"
    else:
        prompt += f"### Format: {WITHOUT_STARTER}\n```python\n# YOUR CODE HERE\n```\n\n"
    return prompt + "### Answer: (use the provided format with backticks)\n\n"


# ---- a problem's tests ----------------------------------------------------------------------------------------


class _NoGlobals(pickle.Unpickler):
    """An unpickler for LCB's compressed tests (a pickled JSON string): no classes or functions may be loaded."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"private_test_cases: refusing to load {module}.{name} from a pickle")


def decode_tests(raw: str | list, field: str = "private_test_cases") -> list[dict[str, str]]:
    """A test-case field of the hub schema: a JSON list, or (LCB's private tests) base64 of zlib of a pickled JSON
    string. Returns ``[{"input", "output", "testtype"}, ...]``."""
    if isinstance(raw, list):
        return raw
    try:
        tests = json.loads(raw)
    except json.JSONDecodeError:
        try:
            text = _NoGlobals(io.BytesIO(zlib.decompress(base64.b64decode(raw.encode("utf-8"))))).load()
            tests = json.loads(text)
        except (ValueError, zlib.error, pickle.UnpicklingError, EOFError) as err:
            raise ValueError(f"{field}: neither JSON nor LCB's base64/zlib/pickle encoding ({err})") from None
    if not isinstance(tests, list) or not all(
        isinstance(t, dict) and {"input", "output"} <= set(t) for t in tests
    ):
        raise ValueError(f"{field}: expected a list of {{'input', 'output', 'testtype'}} objects")
    return tests


def problem_tests(doc: dict[str, Any]) -> dict[str, Any]:
    """LCB's evaluation sample of a hub row: public then private tests, and ``metadata.func_name`` (None: stdin)."""
    metadata = doc.get("metadata") or "{}"
    metadata = json.loads(metadata) if isinstance(metadata, str) else metadata
    tests = decode_tests(doc["public_test_cases"], "public_test_cases") + decode_tests(
        doc["private_test_cases"]
    )
    return {"inputs": [t["input"] for t in tests], "outputs": [t["output"] for t in tests],
            "fn_name": metadata.get("func_name")}  # fmt: skip


# ---- a response's program -------------------------------------------------------------------------------------


def extract_code(response: str) -> str:
    """LCB's extraction for chat models: the lines between the last two lines that contain a code fence ("" when
    there are fewer than two)."""
    lines = response.split("\n")
    fences = [i for i, line in enumerate(lines) if "```" in line]
    if len(fences) < 2:
        return ""
    return "\n".join(lines[fences[-2] + 1 : fences[-1]])


# ---- running a program on the tests ---------------------------------------------------------------------------


def run_tests(
    code: str,
    tests: dict[str, Any],
    timeout_s: float = TIMEOUT_S,
    memory_mb: int = MEMORY_MB,
    overall_s: float | None = None,
) -> dict[str, Any]:
    """Run ``code`` on ``tests`` (:func:`problem_tests`) in a child process. Returns ``{"results": [...], "passed":
    bool, "error"?}``: one entry per test run (``True``, or -2 wrong, -3 time limit, -4 error; -1 for every test
    when the whole process ran past ``overall_s`` (LCB's ``(timeout_s + 1) * tests + 5`` seconds) or died), stopping
    at the first failure.
    """
    require_code_eval()
    n = len(tests["inputs"])
    if n == 0:
        raise ValueError("run_tests: the problem has no tests")
    if not code.strip():
        return {"results": [-4], "passed": False, "error": "no code"}
    with tempfile.TemporaryDirectory(prefix="psft-code-") as tmp:
        job, result = Path(tmp) / "job.json", Path(tmp) / "result.json"
        job.write_text(
            json.dumps({"code": code, "tests": tests, "timeout_s": timeout_s, "memory_mb": memory_mb})
        )
        work = Path(tmp) / "work"
        work.mkdir()
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", "HOME": str(work),
               "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "PYTHONIOENCODING": "utf-8"}  # fmt: skip
        proc = subprocess.Popen(
            [sys.executable, "-I", str(RUNNER), str(job), str(result)], cwd=work, env=env,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
        )  # fmt: skip
        overall = overall_s if overall_s is not None else (timeout_s + 1) * n + 5
        try:
            _, stderr = proc.communicate(timeout=overall)
        except subprocess.TimeoutExpired:
            return {"results": [-1] * n, "passed": False, "error": f"overall timeout ({overall:.0f} s)"}
        finally:
            _kill_group(proc)  # anything the program left running in its session
        try:
            outcome = json.loads(result.read_text())
        except (OSError, json.JSONDecodeError):
            tail = stderr.decode("utf-8", errors="replace")[-500:]
            return {"results": [-1] * n, "passed": False, "error": f"exit code {proc.returncode}: {tail}"}
    results = outcome["results"]
    outcome["passed"] = len(results) == n and all(r is True for r in results)
    return outcome


def _kill_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def passes(code: str, tests: dict[str, Any], timeout_s: float = TIMEOUT_S) -> bool:
    """Whether ``code`` passes every test (LCB's per-sample correctness)."""
    return bool(run_tests(code, tests, timeout_s)["passed"])


def score_code_responses(
    responses: list[str], tests: dict[str, Any], timeout_s: float = TIMEOUT_S
) -> dict[str, float]:
    """avg@k (the mean over the k samples of all-tests-pass: LCB's pass@1 estimate) and pass@k (any sample)."""
    require_code_eval()
    codes = [extract_code(r) for r in responses]
    workers = max(1, min(len(codes), (os.cpu_count() or 2) // 2))
    with ThreadPoolExecutor(max_workers=workers) as pool:  # each sample waits on its own child process
        correct = [int(p) for p in pool.map(lambda c: passes(c, tests, timeout_s), codes)]
    return {"avg_at_k": sum(correct) / len(correct), "pass_at_k": float(any(correct))}
