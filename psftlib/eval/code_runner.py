"""The child process of :mod:`psftlib.eval.code_exec`: one generated program run against one problem's tests.

Run as a script (``python -I code_runner.py <job.json> <result.json>``, standard library only) in a fresh temporary
folder by :func:`psftlib.eval.code_exec.run_tests`, never imported by the evaluation process. The semantics follow
LiveCodeBench's ``lcb_runner/evaluation/testing_util.py`` (MIT licence, Jain et al., 2025), re-implemented here:

- a standard-input problem runs the whole program once per test with that test's input on ``sys.stdin`` (also
  ``input()``, ``sys.stdin.buffer`` and ``open(0)``) and its printed output captured; the output matches when,
  after stripping the whole text and each line, it has as many lines as the expected one and every line is equal
  or, token by token, equal as decimal numbers (``1.0`` matches ``1``; no tolerance beyond that, as in LCB);
- a call-based (LeetCode) problem defines ``metadata.func_name`` (as a method of ``class Solution`` when the code
  has one); each test input is one JSON value per line (the positional arguments), the output one JSON value, and
  the returned value (a tuple read as a list) must equal it;
- as in LCB, the program sees a prelude of star imports (``math``, ``collections``, ``heapq``, ... ) and a
  recursion limit of 50,000; each test has ``timeout_s`` (LCB: 6 s) of wall time; testing stops at the first
  failing test. Results per test: ``true``, or -2 wrong answer, -3 time limit, -4 runtime or compile error.

Not a sandbox (neither is LCB's): the parent gives the process its own session, folder and environment and kills
it on an overall timeout; here memory (address space), file size and core dumps are limited, and the functions that
delete files, start processes, send signals or open sockets are disabled before the program runs.
"""

from __future__ import annotations

import builtins
import contextlib
import io
import json
import signal
import sys
from decimal import Decimal, InvalidOperation
from typing import Any

PRELUDE_MODULES = ("string", "re", "datetime", "collections", "heapq", "bisect", "copy", "math", "random",
                   "statistics", "itertools", "functools", "operator", "io", "sys", "json", "builtins", "typing")  # fmt: skip
PRELUDE = "".join(f"from {m} import *\n" for m in PRELUDE_MODULES) + "".join(
    f"import {m}\n" for m in PRELUDE_MODULES[:-2]
)
WRONG, TIME_LIMIT, RUNTIME_ERROR = -2, -3, -4
_OPEN = io.open  # the real open: builtins.open is replaced while a program runs
_ERRORS: list[str] = []  # the program's exceptions, for the result's "error"


class _Timeout(BaseException):  # BaseException: a program's `except Exception` cannot swallow it
    pass


def _on_alarm(signum: int, frame: Any) -> None:
    raise _Timeout


def limit_resources(memory_mb: int, file_mb: int = 64) -> None:
    """Address-space, file-size and core-dump limits for this process (where the OS has them)."""
    try:
        import resource
    except ImportError:  # not a POSIX system
        return
    for name, value in (("RLIMIT_AS", memory_mb << 20), ("RLIMIT_FSIZE", file_mb << 20), ("RLIMIT_CORE", 0)):
        which = getattr(resource, name, None)
        if which is None:
            continue
        with contextlib.suppress(ValueError, OSError):  # e.g. a hard limit below ours
            resource.setrlimit(which, (value, value))


def _refuse(*args: Any, **kwargs: Any) -> Any:
    raise PermissionError("disabled while testing generated code")


def guard() -> None:
    """Disable process creation, signals, file removal and sockets for the program about to run."""
    import os
    import shutil
    import socket
    import subprocess

    for name in ("kill", "killpg", "system", "fork", "forkpty", "execv", "execve", "execvp", "spawnv", "popen",
                 "remove", "unlink", "rmdir", "removedirs", "rename", "renames", "replace", "truncate", "chmod",
                 "chown", "setuid"):  # fmt: skip
        if hasattr(os, name):
            setattr(os, name, _refuse)
    shutil.rmtree = shutil.move = _refuse
    subprocess.Popen = _refuse  # type: ignore[misc]
    socket.socket = socket.create_connection = socket.getaddrinfo = _refuse  # type: ignore[misc,assignment]
    for name in ("resource", "psutil", "ctypes"):
        sys.modules[name] = None  # type: ignore[assignment]


def _numbers(line: str) -> list[Decimal] | None:
    try:
        return [Decimal(token) for token in line.split()]
    except InvalidOperation:
        return None


def outputs_match(got: str, expected: str) -> bool:
    """LCB's comparison of printed output: stripped lines, each equal as text or as decimal numbers."""
    got_lines = [line.strip() for line in got.strip().split("\n")]
    want_lines = [line.strip() for line in expected.strip().split("\n")]
    if len(got_lines) != len(want_lines):
        return False
    for a, b in zip(got_lines, want_lines, strict=True):
        if a == b:
            continue
        na, nb = _numbers(a), _numbers(b)
        if na is None or nb is None or na != nb:
            return False
    return True


def _timed(fn: Any, timeout_s: float) -> tuple[Any, int | None]:
    """``fn()`` under a wall-clock alarm: (value, None), or (None, TIME_LIMIT / RUNTIME_ERROR)."""
    signal.setitimer(signal.ITIMER_REAL, timeout_s)
    try:
        return fn(), None
    except _Timeout:
        return None, TIME_LIMIT
    except SystemExit:
        return None, None
    except BaseException as err:  # any error of the program is its failure
        _ERRORS.append(f"{type(err).__name__}: {err}"[:300])
        return None, RUNTIME_ERROR
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


def _stdio_test(program: Any, prelude: dict, test_input: str, timeout_s: float) -> tuple[str, int | None]:
    data = test_input.encode()
    stdin = io.TextIOWrapper(io.BytesIO(data), encoding="utf-8")
    sink = io.BytesIO()
    stdout = io.TextIOWrapper(sink, encoding="utf-8", write_through=True)

    def open_(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if file == 0 or file == "/dev/stdin":
            return io.BytesIO(data) if "b" in mode else io.TextIOWrapper(io.BytesIO(data), encoding="utf-8")
        return _OPEN(file, mode, *args, **kwargs)

    namespace = {**prelude, "__name__": "__main__", "stdin": stdin, "stdout": stdout, "open": open_}
    saved = sys.stdin, sys.stdout, builtins.open
    sys.stdin, sys.stdout, builtins.open = stdin, stdout, open_
    try:
        _, error = _timed(lambda: exec(program, namespace), timeout_s)
        with contextlib.suppress(ValueError):  # the program closed its stdout
            stdout.flush()
    finally:
        sys.stdin, sys.stdout, builtins.open = saved
    return sink.getvalue().decode("utf-8", errors="replace"), error


def run_job(code: str, tests: dict, timeout_s: float) -> dict[str, Any]:
    """Every test of ``tests`` (``{"inputs", "outputs", "fn_name"}``) on ``code``, stopping at the first failure."""
    sys.setrecursionlimit(50_000)
    signal.signal(signal.SIGALRM, _on_alarm)
    prelude: dict[str, Any] = {"__builtins__": builtins}
    exec(PRELUDE, prelude)
    try:
        program = compile(code, "<generated>", "exec")
    except (SyntaxError, ValueError) as err:
        return {"results": [RUNTIME_ERROR], "error": f"compile error: {err}"}
    results: list[Any] = []
    fn_name = tests.get("fn_name")
    if fn_name:
        namespace = {**prelude, "__name__": "solution"}
        sys.stdout = io.StringIO()  # what the program prints is not its answer
        _, error = _timed(lambda: exec(program, namespace), timeout_s)
        if error is not None:
            return {"results": [error], "error": f"defining the solution: {_ERRORS[-1:]}"}
        owner = namespace["Solution"]() if "class Solution" in code and "Solution" in namespace else None
        method = getattr(owner, fn_name, None) if owner is not None else namespace.get(fn_name)
        if not callable(method):
            return {"results": [RUNTIME_ERROR], "error": f"no function {fn_name!r}"}
        for test_input, expected in zip(tests["inputs"], tests["outputs"], strict=True):
            args = [json.loads(line) for line in test_input.split("\n")]
            got, error = _timed(lambda args=args: method(*args), timeout_s)
            if isinstance(got, tuple):
                got = list(got)
            results.append(error if error is not None else (True if got == json.loads(expected) else WRONG))
            if results[-1] is not True:
                break
        return {"results": results, **({"error": _ERRORS[-1]} if _ERRORS else {})}
    for test_input, expected in zip(tests["inputs"], tests["outputs"], strict=True):
        printed, error = _stdio_test(program, prelude, test_input, timeout_s)
        results.append(error if error is not None else (True if outputs_match(printed, expected) else WRONG))
        if results[-1] is not True:
            break
    return {"results": results, **({"error": _ERRORS[-1]} if _ERRORS else {})}


def main(job_path: str, result_path: str) -> None:
    with open(job_path, encoding="utf-8") as f:
        job = json.load(f)
    with open(
        result_path, "w", encoding="utf-8"
    ) as result_file:  # opened before the program can touch anything
        limit_resources(int(job["memory_mb"]))
        guard()
        result_file.write(json.dumps(run_job(job["code"], job["tests"], float(job["timeout_s"]))))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
    sys.stdout.flush()
    import os

    os._exit(0)  # the program may have left threads or handlers behind
