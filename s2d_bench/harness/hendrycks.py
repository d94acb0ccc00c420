"""The Hendrycks MATH `is_equiv`, kept as the second (audit) grader: the reference, statement for statement.

This is the string normalisation of the MATH paper's grader (github.com/hendrycks/math, MIT), as
lm-eval ships it in `lm_eval/tasks/hendrycks_math/utils.py`, which many published numbers use.
It is ported faithfully, quirks included, so a number graded here is comparable with theirs:
only `\\$` is removed (a bare `$` stays), a second `\\text{ ` unit or a non-integer `a/b` raises
inside the normalisation and falls back to comparing the raw strings, and `x = 5` loses its
left side only when there is exactly one `=`. `tests/harness/test_grading.py` runs this and lm-eval's copy
on generated answer pairs and requires the same verdict on every one. It compares strings, so it
is stricter than math-verify on values (`0.5` vs `\\frac12` differ): its job here is the audit
column, where disagreement with math-verify flags answers worth a look.
"""

from __future__ import annotations


def _fix_fracs(string: str) -> str:
    """\\frac12 -> \\frac{1}{2}, \\frac1{72} -> \\frac{1}{72}; a \\frac with fewer than two characters after it is left as it was."""
    substrs = string.split("\\frac")
    new_str = substrs[0]
    for substr in substrs[1:]:
        new_str += "\\frac"
        if substr[0] == "{":  # an IndexError on "\\frac" at the very end, as the reference: raw comparison
            new_str += substr
            continue
        if len(substr) < 2:
            return string
        a, b, post = substr[0], substr[1], substr[2:]
        new_str += "{" + a + "}{" + b + "}" + post if b != "{" else "{" + a + "}" + b + post
    return new_str


def _fix_a_slash_b(string: str) -> str:
    """3/4 -> \\frac{3}{4} for integers written plainly; anything else that is not an integer raises (ValueError)."""
    if len(string.split("/")) != 2:
        return string
    a, b = string.split("/")
    a_int, b_int = int(a), int(b)  # ValueError on non-integers: the reference lets it escape to is_equiv
    if string != f"{a_int}/{b_int}":
        return string
    return "\\frac{" + str(a_int) + "}{" + str(b_int) + "}"


def _remove_right_units(string: str) -> str:
    """Drops a unit after "\\text{ " (the only place it occurs in MATH); two of them raise, as the reference asserts."""
    if "\\text{ " not in string:
        return string
    splits = string.split("\\text{ ")
    if len(splits) != 2:
        raise ValueError("more than one \\text{ unit")
    return splits[0]


def _fix_sqrt(string: str) -> str:
    """\\sqrt3 -> \\sqrt{3} (an IndexError on a trailing \\sqrt, as the reference)."""
    if "\\sqrt" not in string:
        return string
    splits = string.split("\\sqrt")
    new_string = splits[0]
    for split in splits[1:]:
        new_string += "\\sqrt{" + split[0] + "}" + split[1:] if split[0] != "{" else "\\sqrt" + split
    return new_string


def strip_string(string: str) -> str:
    """The reference's normalisation, step for step (it may raise; `is_equiv` then compares raw strings)."""
    string = string.replace("\n", "")
    string = string.replace("\\!", "")
    string = string.replace("\\\\", "\\")
    string = string.replace("tfrac", "frac").replace("dfrac", "frac")
    string = string.replace("\\left", "").replace("\\right", "")
    string = string.replace("^{\\circ}", "").replace("^\\circ", "")
    string = string.replace("\\$", "")  # only the escaped dollar: a bare $ stays
    string = _remove_right_units(string)
    string = string.replace("\\%", "")  # the reference's two replacements are the same string: a bare % stays
    string = string.replace(" .", " 0.").replace("{.", "{0.")
    if not string:
        return string
    if string[0] == ".":
        string = "0" + string
    if len(string.split("=")) == 2 and len(string.split("=")[0]) <= 2:  # "k = 5" -> " 5"
        string = string.split("=")[1]
    string = _fix_sqrt(string)
    string = string.replace(" ", "")
    string = _fix_fracs(string)
    if string == "0.5":
        string = "\\frac{1}{2}"
    return _fix_a_slash_b(string)


def is_equiv(gold: str, pred: str | None) -> bool:
    """True when the normalised strings are equal; a missing prediction is never right; a normalisation that
    raises falls back to comparing the raw strings, as the reference does."""
    if pred is None:
        return False
    try:
        return strip_string(gold) == strip_string(pred)
    except Exception:  # noqa: BLE001 - the reference's own fallback
        return gold == pred
