"""A timm-style registry of named model constructors.

A constructor is a function ``fn(num_classes, in_channels, image_size, **options) -> nn.Module``
registered under a name with :func:`register_model`; a factory reference
(``path/to/file.py:factory``, ``package.module:factory``) works wherever a name does. :func:`create_model` builds a model by
name and records its *spec* (name plus every constructor argument, defaults filled in) on the
module, so that :func:`model_spec` can later describe the architecture as a plain JSON-friendly
dict and :func:`create_model_from_spec` can rebuild an identical one.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable
from typing import Any

from torch import nn

from metaprune.errors import ConfigError, ModelError
from metaprune.models.references import build_from_reference, is_reference
from metaprune.registry import Registry

ModelConstructor = Callable[..., nn.Module]

#: Every model constructor by name (add one with :func:`register_model`).
MODELS: Registry[ModelConstructor] = Registry("model")
_SPEC_ATTRIBUTE = "_metaprune_spec"
_SHAPE_ARGUMENTS = ("num_classes", "in_channels", "image_size")


def register_model(name: str) -> Callable[[ModelConstructor], ModelConstructor]:
    """Register a model constructor under ``name`` (decorator).

    The constructor must accept ``num_classes``, ``in_channels`` and ``image_size`` keyword
    arguments; any further keyword arguments are architecture options (e.g. ``width``).
    """

    def decorator(constructor: ModelConstructor) -> ModelConstructor:
        parameters = inspect.signature(constructor).parameters
        missing = [arg for arg in _SHAPE_ARGUMENTS if arg not in parameters]
        if missing:
            raise ConfigError(f"model constructor {name!r} must accept the arguments {missing}")
        return MODELS.add(name, constructor)

    return decorator


def list_models() -> list[str]:
    """Names of all registered models, sorted."""
    return sorted(MODELS.names())


def _json_friendly(value: Any) -> Any:
    """Tuples become lists (recursively) so that a spec survives a JSON round trip unchanged."""
    if isinstance(value, (tuple, list)):
        return [_json_friendly(item) for item in value]
    if isinstance(value, dict):
        return {key: _json_friendly(item) for key, item in value.items()}
    return value


def _check_positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")


def create_model(
    name: str, num_classes: int = 10, in_channels: int = 1, image_size: int = 16, **kwargs: Any
) -> nn.Module:
    """Build the registered model ``name``, or the model of a factory reference.

    Args:
        name: a name from :func:`list_models`, or a factory reference ``path/to/file.py:factory`` /
            ``package.module:factory`` (:mod:`metaprune.models.references`): the factory gets the
            shape arguments its signature names plus ``kwargs``, and the spec records the reference
            (a file as its absolute path).
        num_classes: size of the classifier output.
        in_channels: channels of the input images (1 for grayscale, 3 for RGB).
        image_size: side of the square input images the model is built for.
        **kwargs: architecture options of that model (e.g. ``width`` for ResNet/VGG).

    Raises:
        ConfigError: unknown name, bad reference (missing file, module or factory), or arguments the
            constructor does not accept or rejects.
        ModelError: a referenced file or module raises on import, or its factory raises or returns
            something other than an ``nn.Module``.
    """
    for arg_name, value in (("num_classes", num_classes), ("in_channels", in_channels),
                            ("image_size", image_size)):
        _check_positive_int(arg_name, value)
    if not isinstance(name, str):
        raise ConfigError(f"a model name must be a string, got {type(name).__name__}")
    if name not in MODELS and is_reference(name):
        shapes = {"num_classes": num_classes, "in_channels": in_channels, "image_size": image_size}
        model, reference, record = build_from_reference(name, shapes, kwargs)
        setattr(model, _SPEC_ATTRIBUTE, {"name": reference, "kwargs": _json_friendly(record)})
        return model
    if name not in MODELS and name.endswith(".py"):
        raise ConfigError(f"model file {name!r} needs its factory: {name}:FACTORY, FACTORY the function that "
                          "returns the model")
    constructor = MODELS.get(name)
    try:
        bound = inspect.signature(constructor).bind(
            num_classes=num_classes, in_channels=in_channels, image_size=image_size, **kwargs
        )
    except TypeError as error:
        options = [p for p in inspect.signature(constructor).parameters if p not in _SHAPE_ARGUMENTS]
        raise ConfigError(f"bad arguments for model {name!r}: {error}; its options are {options}") from error
    bound.apply_defaults()
    model = constructor(*bound.args, **bound.kwargs)
    setattr(model, _SPEC_ATTRIBUTE, {"name": name, "kwargs": _json_friendly(dict(bound.arguments))})
    return model


def model_spec(model: nn.Module) -> dict[str, Any]:
    """The spec ``{"name": ..., "kwargs": {...}}`` recorded when ``model`` was built
    (``name`` a registry name or a canonical factory reference).

    ``kwargs`` holds every constructor argument (``num_classes``, ``in_channels``,
    ``image_size`` and all options with their defaults), so
    ``create_model(spec["name"], **spec["kwargs"])`` rebuilds the same (dense) architecture.

    Raises:
        ModelError: ``model`` was not built by :func:`create_model`.
    """
    spec = getattr(model, _SPEC_ATTRIBUTE, None)
    if spec is None:
        raise ModelError(
            f"{type(model).__name__} has no model spec: only models built by "
            "metaprune.models.create_model carry one"
        )
    return copy.deepcopy(spec)


def create_model_from_spec(spec: dict[str, Any]) -> nn.Module:
    """Rebuild a model from a spec returned by :func:`model_spec` (e.g. after a JSON round trip).

    Raises:
        ConfigError: ``spec`` is not a dict with a string ``name`` and a dict ``kwargs``.
    """
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str) \
            or not isinstance(spec.get("kwargs", {}), dict):
        raise ConfigError(f"a model spec must be {{'name': str, 'kwargs': dict}}, got {spec!r}")
    return create_model(spec["name"], **spec.get("kwargs", {}))
