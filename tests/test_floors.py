"""The floors of DESIGN.md hold: `lint-imports` keeps the layer contract of pyproject.toml,
and a deliberate back edge (the engine importing a workflow) breaks it.

``search/``, ``zoo/`` and ``kernels/`` live at the repository root but install inside the
``metaprune`` package, so the contract is checked on a mirror of the installed layout built
from symbolic links (no file is copied or changed).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAPPED = {"search": ROOT / "search", "zoo": ROOT / "zoo", "kernels": ROOT / "kernels"}


def _mirror(base: Path, extra: dict[str, str] | None = None) -> Path:
    """``base/metaprune`` laid out as installed; ``extra`` adds modules (``"prune/x.py": source``)."""
    package = base / "metaprune"
    package.mkdir(parents=True)
    entries = {path.name: path for path in (ROOT / "metaprune").iterdir() if path.name != "__pycache__"}
    entries.update(MAPPED)
    touched = {relative.split("/")[0] for relative in extra or {}}
    for name, target in entries.items():
        if name in touched:  # a real folder of links, so that the extra module lands in the mirror only
            (package / name).mkdir()
            for item in target.iterdir():
                if item.name != "__pycache__":
                    (package / name / item.name).symlink_to(item)
        else:
            (package / name).symlink_to(target)
    for relative, source in (extra or {}).items():
        (package / relative).write_text(source)
    return base


def _lint(base: Path) -> subprocess.CompletedProcess:
    lint_imports = Path(sys.executable).parent / "lint-imports"
    if not lint_imports.exists():
        pytest.fail("lint-imports is missing: install the dev extra (pip install -e '.[dev]')")
    environment = {**os.environ, "PYTHONPATH": str(base)}
    return subprocess.run([str(lint_imports), "--no-cache", str(ROOT / "pyproject.toml")], cwd=base, env=environment,
                          capture_output=True, text=True, timeout=300)


def test_the_layer_contract_is_kept(tmp_path):
    result = _lint(_mirror(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 kept, 0 broken" in result.stdout


def test_a_back_edge_from_the_engine_to_a_workflow_breaks_the_contract(tmp_path):
    back_edge = '"""A deliberate back edge."""\n\n\ndef run():\n    from metaprune.workflows.prune import run_prune\n\n    return run_prune\n'
    result = _lint(_mirror(tmp_path, {"prune/back_edge.py": back_edge}))
    assert result.returncode != 0
    assert "0 kept, 1 broken" in result.stdout
    assert "metaprune.prune.back_edge -> metaprune.workflows.prune" in result.stdout


def test_a_new_top_level_package_must_choose_a_floor(tmp_path):
    result = _lint(_mirror(tmp_path, {"unplaced.py": '"""A module on no floor."""\n'}))
    assert result.returncode != 0
    assert "unplaced" in result.stdout


def test_the_root_level_packages_are_checked_on_the_installed_layout(tmp_path):
    """search/, zoo/ and kernels/ are optional layers for a plain run; on the installed layout they count."""
    back_edge = '"""A deliberate back edge."""\n\nfrom metaprune.workflows import search  # noqa: F401\n'
    result = _lint(_mirror(tmp_path, {"search/back_edge.py": back_edge}))
    assert result.returncode != 0
    assert "metaprune.search.back_edge -> metaprune.workflows.search" in result.stdout


def test_a_plain_run_from_the_repository_keeps_the_contract():
    lint_imports = Path(sys.executable).parent / "lint-imports"
    result = subprocess.run([str(lint_imports), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 kept, 0 broken" in result.stdout
