"""Models from the user's own code: factory references instead of registry names.

A *factory reference* names a callable that returns an ``nn.Module``:

* ``path/to/file.py:make_net``: a function (or class) defined in a Python file; the file is
  imported under a private module name, its folder on ``sys.path`` while it runs (so it can
  import its neighbours), and again only when it changes;
* ``package.module:make_net``: a function (or class) of an importable module.

The attribute may be dotted (``mymodels.py:Zoo.small``). :func:`create_model
<metaprune.models.create_model>` accepts a reference wherever it accepts a registry name and
records its :func:`canonical <FactoryReference.canonical>` form (file references as absolute
paths, module references as given) in the model's spec, so a run directory rebuilds the model
from a fresh shell in any folder.

Importing a reference runs that code: only load run directories whose ``architecture.json``
you trust (the zoo refuses references altogether).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import json
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from torch import nn

from metaprune.errors import ConfigError, MetapruneError, ModelError

SEPARATOR = ":"
#: The shape arguments a factory receives when its signature names them.
SHAPE_ARGUMENTS = ("num_classes", "in_channels", "image_size")
_FORMS = "path/to/file.py:factory or package.module:factory"
_MODULE_PREFIX = "_metaprune_user_model_"
_file_modules: dict[Path, tuple[tuple[int, int], ModuleType]] = {}  # path -> ((mtime_ns, size), module)


def is_reference(name: object) -> bool:
    """Whether ``name`` is a factory reference (it holds a ``:``) rather than a registry name."""
    return isinstance(name, str) and SEPARATOR in name


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


@dataclass(frozen=True)
class FactoryReference:
    """A parsed factory reference: a file or a module, and the attribute path of the factory in it."""

    target: str
    attribute: str
    is_file: bool

    @classmethod
    def parse(cls, text: str) -> FactoryReference:
        """Split ``text`` at its last ``:``; a target ending in ``.py`` or holding a path separator is a file.

        Raises:
            ConfigError: ``text`` is not of the form ``path/to/file.py:factory`` or ``package.module:factory``.
        """
        if not is_reference(text):
            raise ConfigError(f"a model reference looks like {_FORMS}, got {text!r}")
        target, attribute = text.rsplit(SEPARATOR, 1)
        if not target or not all(part.isidentifier() for part in attribute.split(".")):
            raise ConfigError(f"a model reference looks like {_FORMS} (the factory a Python name), got {text!r}")
        is_file = target.endswith(".py") or "/" in target or "\\" in target
        if not is_file and not all(part.isidentifier() for part in target.split(".")):
            raise ConfigError(f"{target!r} in {text!r} is neither a .py file nor a module name; use {_FORMS}")
        return cls(target, attribute, is_file)

    @property
    def path(self) -> Path:
        """The absolute path of a file reference (``~`` expanded, relative to the current folder)."""
        return Path(self.target).expanduser().resolve()

    def canonical(self) -> str:
        """The reference as recorded in a model spec: file references absolute, module references as given."""
        target = str(self.path) if self.is_file else self.target
        return f"{target}{SEPARATOR}{self.attribute}"

    def where(self) -> str:
        """The file or module the factory lives in, for messages."""
        return f"file {self.path}" if self.is_file else f"module {self.target!r}"

    def import_target(self) -> ModuleType:
        """Import the file or module that holds the factory.

        Raises:
            ConfigError: the file does not exist, or the module is not installed.
            ModelError: the file or module raises while it is imported.
        """
        return _import_file(self.path) if self.is_file else _import_module(self.target)

    def resolve(self) -> Callable[..., Any]:
        """The factory itself (imported, fetched and checked to be callable).

        Raises:
            ConfigError: missing file, module or attribute.
            ModelError: the code raises on import, or the attribute is not callable.
        """
        value: Any = self.import_target()
        for depth, part in enumerate(self.attribute.split(".")):
            if not hasattr(value, part):
                if depth == 0:
                    raise ConfigError(f"{self.where()} has no {part!r}; define it there or use one of "
                                      f"{_callables(value)}")
                raise ConfigError(f"{'.'.join(self.attribute.split('.')[:depth])} in {self.where()} has no {part!r}")
            value = getattr(value, part)
        if not callable(value):
            raise ModelError(f"{self.attribute} in {self.where()} is a {type(value).__name__}, not a factory: "
                             "point the reference at a function or class that returns an nn.Module")
        return value


def _callables(module: ModuleType) -> list[str]:
    """Public callables a module defines itself (for did-you-mean messages), at most 10."""
    names = [name for name, value in vars(module).items()
             if not name.startswith("_") and callable(value) and getattr(value, "__module__", None) == module.__name__]
    return names[:10]


def _module_name(path: Path) -> str:
    stem = re.sub(r"\W", "_", path.stem)
    return f"{_MODULE_PREFIX}{stem}_{hashlib.sha1(str(path).encode()).hexdigest()[:10]}"


def _import_file(path: Path) -> ModuleType:
    """Import a Python file under a private module name (cached until the file changes)."""
    if not path.is_file():
        raise ConfigError(f"model file {path} not found; give the path of a .py file that defines the factory")
    stat = path.stat()
    version = (stat.st_mtime_ns, stat.st_size)
    cached = _file_modules.get(path)
    if cached is not None and cached[0] == version:
        return cached[1]
    name = _module_name(path)
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"model file {path} cannot be imported as Python; give a .py file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickle look classes up by module name
    folder = str(path.parent)
    sys.path.insert(0, folder)
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as error:
        sys.modules.pop(name, None)
        raise ModelError(f"importing model file {path} raised {_one_line(error)}; "
                         f"fix the file (`python {path}` shows the traceback)") from error
    finally:
        if folder in sys.path:
            sys.path.remove(folder)
    _file_modules[path] = (version, module)
    return module


def _import_module(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as error:
        if error.name and (name == error.name or name.startswith(error.name + ".")):
            raise ConfigError(f"cannot import module {name!r} ({_one_line(error)}): install it, add its folder to "
                              f"PYTHONPATH, or give the file instead (path/to/{name.split('.')[-1]}.py:factory)") \
                from error
        raise ModelError(f"importing module {name!r} raised {_one_line(error)}; install what it needs") from error
    except (Exception, SystemExit) as error:
        raise ModelError(f"importing module {name!r} raised {_one_line(error)}; fix the module") from error


def _signature(factory: Callable[..., Any]) -> inspect.Signature | None:
    try:
        return inspect.signature(factory)
    except (TypeError, ValueError):  # some builtins and C extensions have none
        return None


def _named_parameters(signature: inspect.Signature | None) -> list[str]:
    if signature is None:
        return []
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return [name for name, parameter in signature.parameters.items() if parameter.kind in kinds]


def _json_plain(value: Any) -> bool:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return False
    return True


def factory_arguments(reference: str, factory: Callable[..., Any], shapes: Mapping[str, int],
                      options: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The keyword arguments to call ``factory`` with, and those to record in the model spec.

    The factory gets the shape arguments its signature names (``num_classes``, ``in_channels``,
    ``image_size``; a ``**kwargs`` catch-all gets none of them) plus every option. The record holds
    all three shape arguments, the options and the factory's JSON-friendly defaults, so that
    ``create_model(reference, **record)`` rebuilds the same architecture.

    Raises:
        ConfigError: the factory's signature rejects the options (or misses a required argument).
    """
    signature = _signature(factory)
    named = _named_parameters(signature)
    call = {key: value for key, value in shapes.items() if key in named}
    call.update(options)
    if signature is not None:
        try:
            bound = signature.bind(**call)
        except TypeError as error:
            accepted = [name for name in named if name not in SHAPE_ARGUMENTS]
            takes = f"its options are {accepted}" if accepted else "it takes no options"
            raise ConfigError(f"bad arguments for model {reference}: {error}; {takes}") from error
        defaults = {name: parameter.default for name, parameter in signature.parameters.items()
                    if name in named and name not in bound.arguments
                    and parameter.default is not inspect.Parameter.empty and _json_plain(parameter.default)}
    else:
        defaults = {}
    return call, {**shapes, **defaults, **options}


def check_reference(text: str, options: Mapping[str, Any] | None = None) -> str:
    """Resolve a factory reference and check that it takes ``options``, without building the model.

    Returns the canonical reference. Used by the command line to reject bad ``--model`` values
    before any data is loaded or anything is written.

    Raises:
        ConfigError / ModelError: as :meth:`FactoryReference.resolve` and :func:`factory_arguments`.
    """
    reference = FactoryReference.parse(text)
    factory = reference.resolve()
    factory_arguments(reference.canonical(), factory, dict.fromkeys(SHAPE_ARGUMENTS, 1), options or {})
    return reference.canonical()


def build_from_reference(text: str, shapes: Mapping[str, int], options: Mapping[str, Any]) -> tuple[nn.Module, str,
                                                                                                      dict[str, Any]]:
    """Call the factory that ``text`` names; return the model, the canonical reference and the spec kwargs.

    Raises:
        ConfigError: a bad reference, a missing file/module/factory, or options the factory rejects.
        ModelError: the code raises on import or when called, or the factory returns no ``nn.Module``.
    """
    reference = FactoryReference.parse(text)
    canonical = reference.canonical()
    factory = reference.resolve()
    call, record = factory_arguments(canonical, factory, shapes, options)
    try:
        model = factory(**call)
    except MetapruneError:
        raise
    except Exception as error:
        raise ModelError(f"model factory {canonical} raised {_one_line(error)}; "
                         "fix the factory or the options given to it") from error
    if not isinstance(model, nn.Module):
        raise ModelError(f"model factory {canonical} returned a {type(model).__name__}, not a torch.nn.Module; "
                         "make it return the model")
    return model, canonical, record
