"""The package's modules import each other without a circle (module-level imports; a circle makes import order matter
and hides which layer owns what), and the CLI starts without torch."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "s2d_bench"


def _graph() -> dict[str, set[str]]:
    mods = {}
    for path in ROOT.rglob("*.py"):
        name = ".".join(path.relative_to(ROOT.parent).with_suffix("").parts).removesuffix(".__init__")
        mods[name] = path
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for name, path in mods.items():
        for node in ast.parse(path.read_text()).body:  # TYPE_CHECKING blocks and imports inside functions are not at import time
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("s2d_bench"):
                graph[name] |= {t for t in [node.module, *(f"{node.module}.{a.name}" for a in node.names)] if t in mods and t != name}
            elif isinstance(node, ast.Import):
                graph[name] |= {a.name for a in node.names if a.name in mods and a.name != name}
    return graph


def test_no_module_imports_itself_back_through_others():
    graph, state, circles = _graph(), {}, []

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for other in sorted(graph[module]):
            if state.get(other) == "open":
                circles.append(path[path.index(other):] + [module, other])
            elif other not in state:
                visit(other, path + [module])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [])
    assert not circles, circles
    assert graph["s2d_bench.generation.rollouts"] and "s2d_bench.generation.engine" in graph["s2d_bench.backends.torch_backend"]


def test_the_cli_starts_without_torch():
    code = "import sys, s2d_bench.cli; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"


def test_a_process_that_loads_a_model_never_imports_scikit_learn():
    """lean_imports: transformers' generation package imports sklearn.metrics (about 1.1 s here) when scikit-learn is
    installed; it is kept out, here too where transformers is imported before s2d_bench, and transformers'
    `is_sklearn_available` still answers True afterwards (only that one module's import is changed)."""
    code = ("import sys, transformers, s2d_bench.pipeline\n"
            "from s2d_bench.models.builders import tiny_qwen3_student\n"
            "tiny_qwen3_student()[0].generate\n"
            "from transformers import GenerationMixin\n"
            "import transformers.utils as u, transformers.generation.candidate_generator as cg\n"
            "print('sklearn' in sys.modules, u.is_sklearn_available(), cg.is_sklearn_available())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "True", "False"]
