"""The Hendrycks MATH string-normalising equivalence check, kept as the second grader.

This is the normalisation of the MATH paper's `is_equiv` (github.com/hendrycks/math, MIT), which
many published numbers still use. It compares strings after stripping formatting, so it is
stricter than math-verify on values (`0.5` vs `\\frac12` differ) and looser on nothing: its job
here is the audit column, where disagreement with math-verify flags answers worth a look.
"""

from __future__ import annotations

import re


def _fix_fracs(s: str) -> str:
    parts = s.split("\\frac")
    out = parts[0]
    for part in parts[1:]:
        out += "\\frac"
        if part.startswith("{") or len(part) < 2:
            out += part
            continue
        a, b, rest = part[0], part[1], part[2:]
        out += f"{{{a}}}{b}{rest}" if b == "{" else f"{{{a}}}{{{b}}}{rest}"
    return out


def _fix_a_slash_b(s: str) -> str:
    m = re.fullmatch(r"(-?\d+)/(\d+)", s)
    return f"\\frac{{{m.group(1)}}}{{{m.group(2)}}}" if m else s


def _fix_sqrt(s: str) -> str:
    return re.sub(r"\\sqrt(\w)", r"\\sqrt{\1}", s)


def _remove_right_units(s: str) -> str:
    return s.split("\\text{ ")[0] if "\\text{ " in s else s


def strip_string(s: str) -> str:
    s = s.replace("\n", "").replace("\\!", "").replace("\\\\", "\\")
    s = s.replace("tfrac", "frac").replace("dfrac", "frac")
    s = s.replace("\\left", "").replace("\\right", "")
    s = s.replace("^{\\circ}", "").replace("^\\circ", "")
    s = s.replace("\\$", "").replace("$", "")
    s = _remove_right_units(s)
    s = s.replace("\\%", "").replace("%", "")
    s = s.replace(" .", " 0.").replace("{.", "{0.")
    if s.startswith("."):
        s = "0" + s
    if "=" in s and len(s.split("=")[0]) <= 2:  # "x = 5" -> "5"
        s = s.split("=", 1)[1]
    s = _fix_sqrt(s)
    s = s.replace(" ", "")
    s = _fix_fracs(s)
    if s == "0.5":
        s = "\\frac{1}{2}"
    return _fix_a_slash_b(s)


def is_equiv(gold: str, pred: str | None) -> bool:
    """True when the normalised strings are equal; a missing prediction is never right."""
    if pred is None:
        return False
    try:
        return strip_string(gold) == strip_string(pred)
    except Exception:  # noqa: BLE001 - the reference falls back to raw comparison too
        return gold == pred
