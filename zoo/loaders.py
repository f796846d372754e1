"""Zoo entry kinds: which files an entry holds, how it loads, whether ``verify`` can re-measure it.

Every entry (and every run report) names a ``pattern``; the kind that serves the pattern tells
the zoo what to do, so the zoo never branches on a pattern itself::

    kind = entry_kind("prompt-routed")
    kind.required_files         # ('report.json', 'config.json', 'predictor.safetensors', ...)
    pipeline = kind.load(folder)

Two kinds are registered: ``model`` (a pruned ``nn.Module`` in a pruning run directory, for the
engine's patterns ``channel``, ``head``, ``unstructured`` and ``n:m``) and ``prompt-routed``
(a :class:`~metaprune.diffusion.pipeline.PromptRoutedPipeline`). A new kind registers itself::

    ENTRY_KINDS.add("my-kind", EntryKind(patterns=("my-pattern",), required_files=(...), load=my_loader))
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from metaprune.errors import ZooError
from metaprune.prune.plan import PATTERNS as PRUNE_PATTERNS
from metaprune.registry import Registry
from metaprune.rundir import (
    ARCHITECTURE_FILE,
    PIPELINE_FILES,
    PLAN_FILE,
    REPORT_FILE,
    REPORT_PLOT_FILE,
    WEIGHTS_FILE,
)

DEFAULT_KIND = "model"


@dataclass(frozen=True)
class EntryKind:
    """How the zoo handles entries of some patterns.

    Args:
        patterns: the ``pattern`` values (in entries and run reports) that this kind serves.
        required_files: files a run directory must hold to be published as this kind.
        load: ``load(folder)`` rebuilds the entry from its (verified) files, without pickle.
        optional_files: files published when present.
        verify_refusal: ``None`` if :func:`metaprune.zoo.verify` can re-measure the entry; else
            the reason it cannot, with ``{name}`` for the entry's name.
    """

    patterns: tuple[str, ...]
    required_files: tuple[str, ...]
    load: Callable[[Path], Any]
    optional_files: tuple[str, ...] = ()
    verify_refusal: str | None = None

    @property
    def verifiable(self) -> bool:
        """Whether ``verify`` can re-measure accuracy and FLOPs of entries of this kind."""
        return self.verify_refusal is None

    def check_verifiable(self, name: str) -> None:
        """Raise :class:`ZooError` with the kind's reason if entry ``name`` cannot be verified."""
        if self.verify_refusal is not None:
            raise ZooError(self.verify_refusal.format(name=name))


ENTRY_KINDS: Registry[EntryKind] = Registry("zoo entry kind", error=ZooError)


def entry_patterns() -> tuple[str, ...]:
    """Every pattern a zoo entry may have, kind by kind (in name order)."""
    return tuple(pattern for _, kind in ENTRY_KINDS.items() for pattern in kind.patterns)


def entry_kind(pattern: object, default: str | None = None) -> EntryKind:
    """The kind serving ``pattern``; the kind named ``default`` for an unknown pattern, if given.

    Raises:
        ZooError: ``pattern`` is served by no kind and there is no ``default``.
    """
    for _, kind in ENTRY_KINDS.items():
        if pattern in kind.patterns:
            return kind
    if default is not None:
        return ENTRY_KINDS.get(default)
    raise ZooError(f"unknown pattern {pattern!r}; use one of {entry_patterns()}")


def check_registry_model(folder: Path) -> None:
    """Refuse a run directory whose ``architecture.json`` names anything but a registry model.

    A downloaded entry must never make the zoo import code: a factory reference
    (``file.py:make_net``, ``package.module:make_net``) would run whatever it names.

    Raises:
        ZooError: the architecture names a factory reference, or no model.
    """
    from metaprune.models import is_reference
    from metaprune.rundir import read_json

    path = folder / ARCHITECTURE_FILE
    architecture: Any = read_json(path, error=ZooError)
    spec = architecture.get("model") if isinstance(architecture, dict) else None
    name = spec.get("name") if isinstance(spec, dict) else None
    if not isinstance(name, str) or is_reference(name):
        raise ZooError(f"{path} names the model {name!r}: only registry models can be loaded from the zoo "
                       "(it never imports code named by a download); load a run you trust with metaprune.load_run")


def _load_pruned_model(folder: Path) -> Any:
    """An ``nn.Module`` rebuilt from a pruning run directory (registry models only: see :func:`check_registry_model`)."""
    from metaprune.prune.saving import load_run

    check_registry_model(folder)
    return load_run(folder)


def _load_prompt_routed_pipeline(folder: Path) -> Any:
    """A :class:`~metaprune.diffusion.pipeline.PromptRoutedPipeline` (imports diffusers only when called)."""
    from metaprune.diffusion.pipeline import PromptRoutedPipeline

    return PromptRoutedPipeline.load(folder)


ENTRY_KINDS.add(DEFAULT_KIND, EntryKind(
    patterns=PRUNE_PATTERNS,
    required_files=(REPORT_FILE, WEIGHTS_FILE, ARCHITECTURE_FILE),
    optional_files=(PLAN_FILE, REPORT_PLOT_FILE),
    load=_load_pruned_model,
))
ENTRY_KINDS.add("prompt-routed", EntryKind(
    patterns=("prompt-routed",),
    required_files=(REPORT_FILE, *PIPELINE_FILES),
    load=_load_prompt_routed_pipeline,
    verify_refusal=("{name} is a prompt-routed text-to-image entry: verify re-evaluates classifiers; "
                    "measure it with benchmarks/aptp.py"),
))
