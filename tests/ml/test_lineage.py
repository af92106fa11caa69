"""The code version covers every ML source file, in subpackages too (the drift engine is one)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlops_assets.ml import lineage


@pytest.fixture
def ml_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A copy of the ``ml`` package that ``code_version`` hashes instead of the installed one."""
    copy = tmp_path / "ml"
    shutil.copytree(Path(lineage.__file__).parent, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(lineage, "_ML_SOURCES", copy)
    lineage.code_version.cache_clear()
    yield copy
    lineage.code_version.cache_clear()


def _version_after(edit: Path, text: str) -> str:
    with edit.open("a", encoding="utf-8") as f:
        f.write(text)
    lineage.code_version.cache_clear()
    return lineage.code_version()


def test_a_change_in_a_subpackage_changes_the_code_version(ml_copy: Path) -> None:
    assert (ml_copy / "drift" / "stats.py").is_file()
    before = lineage.code_version()
    assert _version_after(ml_copy / "drift" / "stats.py", "\n# a changed kernel\n") != before


def test_a_change_in_a_top_level_module_changes_the_code_version(ml_copy: Path) -> None:
    before = lineage.code_version()
    assert _version_after(ml_copy / "trainers.py", "\n# a changed trainer\n") != before


def test_files_that_are_not_python_source_do_not_count(ml_copy: Path) -> None:
    before = lineage.code_version()
    assert _version_after(ml_copy / "drift" / "NOTES.txt", "notes\n") == before


def test_moving_a_module_changes_the_code_version(ml_copy: Path) -> None:
    before = lineage.code_version()
    (ml_copy / "drift" / "stats.py").rename(ml_copy / "drift_stats.py")
    lineage.code_version.cache_clear()
    assert lineage.code_version() != before
