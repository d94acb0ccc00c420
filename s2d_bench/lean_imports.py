"""Keep transformers from importing scikit-learn, which nothing here uses: about 1.1 s of every process that loads a model.

transformers' generation package imports `sklearn.metrics.roc_curve` whenever scikit-learn is installed (lm-eval
installs it), for assisted generation's confidence threshold; sklearn.metrics brings scipy.stats and pandas with it.
Measured on this 2-core machine (a busy day, 3 runs each): `import s2d_bench.pipeline` and pandas and matplotlib (what
a training process loads) took a median 8.97 s with it and 7.84 s without. `install()` (called by the package's
`__init__`) adds a finder that acts once, as that one module is imported: it is executed with transformers'
`is_sklearn_available` answering False, and the real function is put back after, so any other caller still sees
scikit-learn. If transformers renames the module, the finder never acts, and the import is only slower
(tests/test_imports.py would say so).
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
from types import ModuleType
from typing import Any, Sequence

MODULE = "transformers.generation.candidate_generator"


class _WithoutSklearn(importlib.abc.Loader):
    """Executes MODULE with `transformers.utils.is_sklearn_available` answering False, then restores it."""

    def __init__(self, loader: importlib.abc.Loader) -> None:
        self.loader = loader

    def __getattr__(self, name: str) -> Any:  # get_source, get_filename, ...: tracebacks and inspect read the module's source
        return getattr(self.loader, name)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self.loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        utils = sys.modules["transformers.utils"]  # imported by then: MODULE's package imports it first
        real = utils.is_sklearn_available
        utils.is_sklearn_available = lambda: False
        try:
            self.loader.exec_module(module)
        finally:
            utils.is_sklearn_available = real


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name: str, path: Sequence[str] | None, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if name != MODULE:
            return None
        sys.meta_path.remove(self)  # once: the module is imported once a process
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _WithoutSklearn(spec.loader)
        return spec


def install() -> None:
    """Add the finder (once a process, ahead of the standard ones); a no-op once MODULE is imported."""
    if MODULE not in sys.modules and not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder())
