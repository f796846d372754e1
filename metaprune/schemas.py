"""Typed schemas for the files metaprune reads, and one way to report what is wrong with them.

Files are parsed into pydantic models (:func:`parse_file`): a wrong type, a missing or unknown
field, a non-finite number or a value out of range is one line naming the file and the field,
raised as the :class:`~metaprune.errors.MetapruneError` subclass the caller chooses.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from metaprune.errors import ConfigError, MetapruneError

Model = TypeVar("Model", bound=BaseModel)

#: A finite float in (0, 1]: keep ratios, FLOPs ratios, per-group floors.
Fraction = Annotated[float, Field(gt=0.0, le=1.0, allow_inf_nan=False)]
#: Largest nesting that a metaprune file may have (deeper files are refused before parsing).
MAX_DEPTH = 32


class StrictModel(BaseModel):
    """Unknown fields are errors; numbers must be finite."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


def describe_error(error: ValidationError) -> str:
    """The first problem of a validation error: ``field 'a.b': message``."""
    first = error.errors()[0]
    location = ".".join(str(part) for part in first.get("loc", ())) or "(top level)"
    return f"field '{location}': {first.get('msg', 'invalid')}"


def _depth(value: Any, limit: int) -> int:
    if limit < 0:
        return 0
    if isinstance(value, dict):
        return 1 + max((_depth(item, limit - 1) for item in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(item, limit - 1) for item in value), default=0)
    return 0


def validate(schema: type[Model], data: Any, source: str, error: type[MetapruneError] = ConfigError) -> Model:
    """``data`` as a ``schema`` instance, or ``error`` naming ``source`` and the first bad field."""
    if _depth(data, MAX_DEPTH + 1) > MAX_DEPTH:
        raise error(f"{source} is nested more than {MAX_DEPTH} levels deep")
    try:
        return schema.model_validate(data)
    except ValidationError as problem:
        raise error(f"{source}: {describe_error(problem)}") from None


def read_json_file(path: str | Path, error: type[MetapruneError] = ConfigError) -> Any:
    """The JSON in ``path``, or ``error`` for a missing file, bad UTF-8 or bad JSON (one line)."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise error(f"{path} does not exist") from None
    except IsADirectoryError:
        raise error(f"{path} is a directory, not a file") from None
    except UnicodeDecodeError as problem:
        raise error(f"{path} is not UTF-8 text (byte {problem.start})") from None
    except OSError as problem:
        raise error(f"cannot read {path}: {problem.strerror or problem}") from None
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError) as problem:
        raise error(f"{path} is not valid JSON: {problem}") from None


def parse_file(schema: type[Model], path: str | Path, error: type[MetapruneError] = ConfigError) -> Model:
    """Read ``path`` (JSON) and validate it against ``schema``."""
    return validate(schema, read_json_file(path, error), str(path), error)
