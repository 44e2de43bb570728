import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"


@pytest.fixture(autouse=True)
def _run_from_project_root(monkeypatch):
    """Paths in reports are relative to the working directory, as users see them."""
    monkeypatch.chdir(ROOT)


@pytest.fixture
def fixtures() -> Path:
    return FIXTURES
