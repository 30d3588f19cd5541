"""The example system plugin (examples/abd_register.py) for tests, without installing it.

`examples/` is put on `sys.path` for this process and on `PYTHONPATH` for the processes tests
start (daemon, workers, report renderer, `voprd --once`), by the `examples_path` fixture.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
TARGET = "abd_register:AbdRegister"


def pythonpath(*extra: Path) -> str:
    """PYTHONPATH for a child process: the repository, examples/, then `extra`."""
    return os.pathsep.join(str(p) for p in (ROOT, EXAMPLES, *extra))


@pytest.fixture
def examples_path(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.syspath_prepend(str(EXAMPLES))
    monkeypatch.setenv("PYTHONPATH", pythonpath())
    yield
