"""Fixtures shared by every layer of the suite."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def project_root() -> Path:
    return ROOT


@pytest.fixture
def scratch() -> Iterator[Path]:
    """A fresh folder outside pytest's own (whose 0700 root an unprivileged Postgres
    could not reach), removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix="supasaasy-test-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
