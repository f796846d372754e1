"""Zoo entry kinds: which files an entry holds, how it loads, whether ``verify`` can re-measure it.

Every entry (and every run report) names a ``pattern``; the kind that serves the pattern tells
the zoo what to do, so the zoo never branches on a pattern itself::

    kind = entry_kind("prompt-routed")
    kind.required_files         # ('report.json', 'config.json', 'predictor.safetensors', ...)
    pipeline = kind.load(folder)

Three kinds are registered: ``model`` (a pruned ``nn.Module`` in a pruning run directory, for the
engine's patterns ``channel``, ``head``, ``unstructured`` and ``n:m``), ``prompt-routed``
(a :class:`~metaprune.diffusion.pipeline.PromptRoutedPipeline`) and ``base-relative`` (a pruned
text encoder stored as its difference from a base model installed as a package, rebuilt on
pull: :mod:`metaprune.zoo.relative`). A new kind registers itself::

    ENTRY_KINDS.add("my-kind", EntryKind(patterns=("my-pattern",), required_files=(...), load=my_loader))
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from metaprune.errors import MetapruneError, ZooError
from metaprune.prune.plan import PATTERNS as PRUNE_PATTERNS
from metaprune.registry import Registry
from metaprune.rundir import (
    ARCHITECTURE_FILE,
    PIPELINE_DIFFUSERS_FILES,
    PIPELINE_FILES,
    PLAN_FILE,
    REPORT_FILE,
    REPORT_PLOT_FILE,
    WEIGHTS_FILE,
)
from metaprune.zoo.schemas import ArchitectureFile, read_json_file

DEFAULT_KIND = "model"
# Bounds on what an entry's architecture.json may ask for, checked on the meta device before anything is built.
MAX_PARAMETERS = 500_000_000
MAX_ACTIVATIONS = 2_000_000_000  # elements of all module outputs for one example input (8 GB in float32)
MAX_INPUT_ELEMENTS = 50_000_000
MAX_MODULES = 50_000  # sub-modules; a depth of millions would take minutes to build even on the meta device


class _TooManyModules(Exception):
    """Raised from the module-registration hook to stop building an architecture with too many modules."""


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
        rebuild: ``rebuild(folder)``, run by ``pull`` once the files are verified, for entries
            whose model is made from their files and something installed (None: nothing to do).
    """

    patterns: tuple[str, ...]
    required_files: tuple[str, ...]
    load: Callable[[Path], Any]
    optional_files: tuple[str, ...] = ()
    verify_refusal: str | None = None
    rebuild: Callable[[Path], Any] | None = None

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


def check_registry_model(folder: Path) -> ArchitectureFile:
    """Refuse a run directory whose ``architecture.json`` names anything but a registry model; returns it validated.

    A downloaded entry must never make the zoo import code: a factory reference
    (``file.py:make_net``, ``package.module:make_net``) would run whatever it names.

    Raises:
        ZooError: the file breaks its schema (one line naming the field), names a factory
            reference, or no model.
    """
    from metaprune.models import is_reference

    path = folder / ARCHITECTURE_FILE
    architecture, _ = read_json_file(path, ArchitectureFile, missing=f"{path} does not exist")
    name = architecture.model.name if architecture.model is not None else None
    if name is None or is_reference(name):
        raise ZooError(f"{path} names the model {name!r}: only registry models can be loaded from the zoo "
                       "(it never imports code named by a download); load a run you trust with metaprune.load_run")
    return architecture


def _input_elements(description: Any, path: Path) -> int:
    """Number of tensor elements of an example-input description (:func:`metaprune.inputs.describe_inputs`)."""
    if not isinstance(description, dict):
        return 0
    if "shape" in description:
        shape = description["shape"]
        if not isinstance(shape, list) or not all(isinstance(size, int) and not isinstance(size, bool)
                                                  and size >= 0 for size in shape):
            raise ZooError(f"{path}: field inputs.shape must be a list of non-negative integers")
        return math.prod(shape)
    children = description.get("kwargs", {}) if "kwargs" in description else description.get("args", [])
    values = children.values() if isinstance(children, dict) else children if isinstance(children, list) else []
    return sum(_input_elements(value, path) for value in values)


def _meta_example_inputs(architecture: ArchitectureFile) -> Any:
    """The example input of ``architecture`` as meta tensors (no memory), or None if it records none."""
    import torch

    from metaprune.inputs import inputs_from_description

    with torch.device("meta"):
        if architecture.inputs is not None:
            return inputs_from_description(architecture.inputs)
        if architecture.input_shape is not None:
            return torch.zeros(architecture.input_shape)
    return None


def estimate_model_size(architecture: ArchitectureFile, path: Path) -> tuple[int, int | None]:
    """(parameters, activation elements for one example input) of the dense model, without allocating it.

    The model is built on PyTorch's ``meta`` device (shapes only) and run once with forward hooks
    summing the sizes of every module output. The pruned model is never larger than this dense one.
    The activation count is None when the model cannot run on the meta device.
    """
    import torch
    from torch.nn.modules.module import register_module_module_registration_hook

    from metaprune.inputs import output_tensors, run_model
    from metaprune.models import create_model_from_spec

    assert architecture.model is not None  # checked by check_registry_model
    builder, registered = threading.get_ident(), 0

    def count_modules(module: Any, name: str, submodule: Any) -> None:
        nonlocal registered
        if threading.get_ident() == builder:  # the hook is global: count only this thread's build
            registered += 1
            if registered > MAX_MODULES:
                raise _TooManyModules

    hook = register_module_module_registration_hook(count_modules)
    try:
        with torch.device("meta"):
            model = create_model_from_spec(architecture.model.model_dump())
    except _TooManyModules as error:
        raise ZooError(f"{path}: field model.kwargs: the architecture has more than {MAX_MODULES:,} modules, "
                       "over the zoo's limit; refusing to build it") from error
    except MetapruneError as error:
        raise ZooError(f"{path}: field model: {error}") from error
    except Exception as error:  # a constructor rejecting a value of the wrong kind (an untrusted file)
        raise ZooError(f"{path}: field model.kwargs: the model cannot be built from it "
                       f"({type(error).__name__}: {str(error).splitlines()[0][:200] if str(error) else ''})") from error
    finally:
        hook.remove()
    parameters = sum(parameter.numel() for parameter in model.parameters())
    if parameters > MAX_PARAMETERS:
        return parameters, None
    activations = 0

    def count(module: Any, inputs: Any, output: Any) -> None:
        nonlocal activations
        activations += sum(tensor.numel() for tensor in output_tensors(output))

    try:
        example = _meta_example_inputs(architecture)
    except MetapruneError as error:
        raise ZooError(f"{path}: field inputs: {error}") from error
    if example is None:
        return parameters, None
    handles = [module.register_forward_hook(count) for module in model.modules()]
    try:
        with torch.no_grad():
            run_model(model.eval(), example)
    except Exception:  # an op without a meta kernel: the activations cannot be estimated, parameters still bound it
        return parameters, None
    finally:
        for handle in handles:
            handle.remove()
    return parameters, activations


def check_model_size(folder: Path, architecture: ArchitectureFile) -> None:
    """Refuse an entry whose architecture would not fit the bounds, before any memory is allocated.

    Raises:
        ZooError: more than :data:`MAX_PARAMETERS` parameters, an example input over
            :data:`MAX_INPUT_ELEMENTS` elements, or more than :data:`MAX_ACTIVATIONS` activation
            elements for one example input.
    """
    path = folder / ARCHITECTURE_FILE
    elements = (_input_elements(architecture.inputs, path) if architecture.inputs is not None
                else math.prod(architecture.input_shape or []))
    if elements > MAX_INPUT_ELEMENTS:
        raise ZooError(f"{path}: field inputs: the example input has {elements:,} elements, over the zoo's "
                       f"limit of {MAX_INPUT_ELEMENTS:,}; refusing to allocate it")
    parameters, activations = estimate_model_size(architecture, path)
    if parameters > MAX_PARAMETERS:
        raise ZooError(f"{path}: field model.kwargs: the architecture has {parameters:,} parameters, over the zoo's "
                       f"limit of {MAX_PARAMETERS:,}; refusing to build it")
    if activations is not None and activations > MAX_ACTIVATIONS:
        raise ZooError(f"{path}: field model.kwargs: one example input makes {activations:,} activation elements, "
                       f"over the zoo's limit of {MAX_ACTIVATIONS:,}; refusing to run it")


def _load_pruned_model(folder: Path) -> Any:
    """An ``nn.Module`` rebuilt from a pruning run directory: registry models only (see
    :func:`check_registry_model`), within the size bounds (see :func:`check_model_size`)."""
    from metaprune.prune.saving import load_run

    architecture = check_registry_model(folder)
    check_model_size(folder, architecture)
    return load_run(folder)


def _load_prompt_routed_pipeline(folder: Path) -> Any:
    """A :class:`~metaprune.diffusion.pipeline.PromptRoutedPipeline` (imports diffusers only when called)."""
    from metaprune.diffusion.pipeline import PromptRoutedPipeline

    return PromptRoutedPipeline.load(folder)


def _load_relative_encoder(folder: Path) -> Any:
    """A :class:`~metaprune.models.minilm.SentenceEncoder` rebuilt from its base package and the entry's delta."""
    from metaprune.zoo.relative import load_relative

    return load_relative(folder)


def _rebuild_relative(folder: Path) -> Path:
    from metaprune.zoo.relative import rebuild

    return rebuild(folder)


ENTRY_KINDS.add(DEFAULT_KIND, EntryKind(
    patterns=PRUNE_PATTERNS,
    required_files=(REPORT_FILE, WEIGHTS_FILE, ARCHITECTURE_FILE),
    optional_files=(PLAN_FILE, REPORT_PLOT_FILE),
    load=_load_pruned_model,
))
ENTRY_KINDS.add("prompt-routed", EntryKind(
    patterns=("prompt-routed",),
    required_files=(REPORT_FILE, *PIPELINE_FILES),
    optional_files=PIPELINE_DIFFUSERS_FILES,  # model_index.json and the configs diffusers reads
    load=_load_prompt_routed_pipeline,
    verify_refusal=("{name} is a prompt-routed text-to-image entry: verify re-evaluates classifiers; "
                    "measure it with benchmarks/aptp.py"),
))
ENTRY_KINDS.add("base-relative", EntryKind(
    patterns=("relative-n:m", "relative-unstructured", "relative-head-ffn"),
    required_files=(REPORT_FILE, "relative.json", "delta.safetensors", "config.json"),
    load=_load_relative_encoder,
    rebuild=_rebuild_relative,
    verify_refusal=("{name} is a sentence encoder scored on STS-B: verify re-evaluates classifiers; "
                    "measure it with benchmarks/minilm_stsb.py"),
))
