"""The package list in pyproject.toml covers every package folder (search/, zoo/, kernels/ are mapped)."""

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAPPED = {"metaprune": "metaprune", "metaprune.search": "search", "metaprune.zoo": "zoo", "metaprune.kernels": "kernels"}


def test_every_package_folder_is_listed():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert config["package-dir"] == MAPPED
    found = set()
    for package, folder in MAPPED.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(ROOT / folder)
            found.add(".".join([package, *relative.parts]))
    assert found == set(config["packages"])
