"""Records each test file's seconds for the suite's order (conftest.py runs the longest files first).

Usage: python -m pytest -n 2 --dist loadfile --junitxml=/tmp/suite.xml tests; python tests/file_seconds.py /tmp/suite.xml
Rewrites tests/file_seconds.json: test file -> the seconds its tests took (calls, set-ups and tear-downs, from the
JUnit report), rounded. Rerun after adding a long test; a file missing from it only starts early.
"""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

OUT = Path(__file__).with_name("file_seconds.json")


def file_seconds(report: Path) -> dict[str, float]:
    """Each file's total test time; a test case names its file as a dotted class name (tests.harness.test_grading)."""
    totals: dict[str, float] = defaultdict(float)
    for case in ET.parse(report).iter("testcase"):
        module = case.get("classname", "").split(".")
        while module and not module[-1].startswith("test_"):  # a test class's name follows its module's
            module.pop()
        if module:
            totals["/".join(module) + ".py"] += float(case.get("time", 0))
    return {name: round(s, 1) for name, s in sorted(totals.items(), key=lambda kv: -kv[1])}


if __name__ == "__main__":
    seconds = file_seconds(Path(sys.argv[1]))
    OUT.write_text(json.dumps(seconds, indent=1) + "\n")
    print(f"{len(seconds)} files, {sum(seconds.values()):.0f} s in all; longest: {next(iter(seconds.items()))}; wrote {OUT}")
