"""Run segen subprocesses as if some packages were not installed (for the "missing extra" tests).

A sitecustomize on PYTHONPATH wraps every import finder so that it does not see the blocked
modules: `import x` raises ModuleNotFoundError and `importlib.util.find_spec("x")` is None,
exactly as after `pip uninstall x`, without touching the shared environment.
"""

from __future__ import annotations

import os
from pathlib import Path

SITECUSTOMIZE = '''import sys
BLOCKED = {blocked!r}


class Hide:
    def __init__(self, inner):
        self.inner = inner

    def find_spec(self, name, path=None, target=None):
        if any(name == b or name.startswith(b + ".") for b in BLOCKED):
            return None
        find = getattr(self.inner, "find_spec", None)
        return find(name, path, target) if find else None

    def __getattr__(self, attr):
        return getattr(self.inner, attr)


sys.meta_path[:] = [Hide(f) for f in sys.meta_path]
'''


def block_modules(monkeypatch, folder: Path, modules: list[str]) -> None:
    """Hide `modules` (and their submodules) from segen processes started after this call."""
    shim = folder / "blocked_imports"
    shim.mkdir(exist_ok=True)
    (shim / "sitecustomize.py").write_text(SITECUSTOMIZE.format(blocked=modules))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(shim), os.environ.get("PYTHONPATH")])))
