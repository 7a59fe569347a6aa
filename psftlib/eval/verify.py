"""Answer checking for math: the last ``\\boxed{...}`` of a response, compared with math-verify.

One function for every math task, the small world's integer answers included (two plain integers are compared
as integers, which is what math-verify concludes, without its set-up cost). math-verify compares LaTeX and
plain numbers semantically (``\\frac12``, ``1/2`` and ``0.5`` are equal). Its timeouts use SIGALRM, which only
works in the main thread; elsewhere they are switched off.
"""

from __future__ import annotations

import re
import threading

# math-verify (and its sympy) is imported at the first check that needs it: plain integers are compared without it

_INTEGER = re.compile(r"-?[0-9]+")


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` in ``text`` (braces matched), or None if there is none / it is cut."""
    i = text.rfind("\\boxed")
    if i < 0:
        return None
    j = text.find("{", i)
    if j < 0:
        return None
    depth = 0
    for k in range(j, len(text)):
        if text[k] == "{":
            depth += 1
        elif text[k] == "}":
            depth -= 1
            if depth == 0:
                return text[j + 1 : k].strip()
    return None


def extract_answer(response: str) -> str | None:
    """The answer a response commits to: its last boxed expression (several boxes: the last one counts)."""
    return last_boxed(response)


def is_correct(pred: str | None, gold: str) -> bool:
    """True when ``pred`` and ``gold`` are the same mathematical value (math-verify), else False."""
    if pred is None or not pred.strip():
        return False
    if _INTEGER.fullmatch(pred.strip()) and _INTEGER.fullmatch(str(gold).strip()):
        # two plain integers (every answer of the small world): math-verify's verdict is integer equality, and
        # skipping it saves its ~1 s first-call set-up (sympy, parsers) in each evaluation process (test_eval)
        return int(pred) == int(gold)
    from math_verify import parse, verify

    main = threading.current_thread() is threading.main_thread()
    kw_parse = {} if main else {"parsing_timeout": None}
    kw_verify = {} if main else {"timeout_seconds": None}
    gold_parsed = parse(f"${gold}$", **kw_parse)
    pred_parsed = parse(f"${pred}$", **kw_parse)
    if not gold_parsed or not pred_parsed:
        return pred.strip() == str(gold).strip()
    return bool(verify(gold_parsed, pred_parsed, **kw_verify))
