"""Typed schemas for the files metaprune reads, and one way to report what is wrong with them.

Every file metaprune reads (plans, ``architecture.json``, reports, zoo indexes, pipeline
configs) is untrusted input: it is read with a size bound (never through a symlink), parsed
once (strict UTF-8, bounded nesting) and validated with pydantic. Any problem becomes one
:class:`~metaprune.errors.MetapruneError` line naming the file and the field::

    plan file plan.json: field keep_ratios.conv: Input should be less than or equal to 1

Numbers are finite (no NaN or infinity) unless a field says otherwise.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Annotated, Any, TypeVar

import pydantic_core
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from metaprune.errors import ConfigError, MetapruneError

Model = TypeVar("Model", bound=BaseModel)

#: A finite float in (0, 1]: keep ratios, FLOPs ratios, per-group floors.
Fraction = Annotated[float, Field(gt=0.0, le=1.0, allow_inf_nan=False)]
#: Largest nesting of Python data handed to :func:`validate` (deeper data is refused before validation).
MAX_DEPTH = 32
#: Largest JSON file read by :func:`read_json_file` unless the caller sets another bound.
MAX_JSON_BYTES = 64 << 20


class StrictModel(BaseModel):
    """Unknown fields are errors; numbers must be finite."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class OpenModel(BaseModel):
    """Strict types and finite numbers; unknown extra keys are kept (newer files stay readable)."""

    model_config = ConfigDict(strict=True, allow_inf_nan=False, extra="allow", frozen=True)


def _depth(value: Any, limit: int) -> int:
    if limit < 0:
        return 0
    if isinstance(value, dict):
        return 1 + max((_depth(item, limit - 1) for item in value.values()), default=0)
    if isinstance(value, (list, tuple)):
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


def parse_json_bytes(raw: bytes | str, source: str, error: type[MetapruneError] = ConfigError) -> Any:
    """The JSON value of ``raw``; invalid JSON, bad UTF-8 or deep nesting is one ``error`` naming ``source``."""
    try:
        # NaN literals parse (Python's json writes them, e.g. an unmeasured wall time); the schemas then
        # refuse non-finite numbers wherever a figure is used.
        return pydantic_core.from_json(raw, allow_inf_nan=True)
    except ValueError as problem:  # every parse failure (encoding, syntax, depth) is a ValueError here
        raise error(f"{source} is not valid JSON: {str(problem).splitlines()[0][:200]}") from None


def read_regular_file(path: Path, max_bytes: int, what: str = "file",
                      error: type[MetapruneError] = ConfigError) -> bytes:
    """The bytes of ``path``, refusing symlinks, non-files and anything larger than ``max_bytes``.

    The file is opened with ``O_NOFOLLOW`` and checked with ``fstat``, so a symlink or FIFO
    planted in its place is refused rather than followed or blocked on.
    """
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        descriptor = os.open(path, flags)
    except FileNotFoundError:
        raise error(f"{what} {path} does not exist") from None
    except OSError as problem:
        raise error(f"cannot read {what} {path}: {problem.strerror or problem} (a symlink is refused)") from None
    with os.fdopen(descriptor, "rb") as stream:
        info = os.fstat(stream.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise error(f"{what} {path} is not a regular file; refusing to read it")
        if info.st_size > max_bytes:
            raise error(f"{what} {path} is {info.st_size:,} bytes, over the limit of {max_bytes:,}")
        data = stream.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise error(f"{what} {path} grew over the limit of {max_bytes:,} bytes while being read")
    return data




def describe_error(error: ValidationError) -> str:
    """The first problem of a validation error, without the file: ``field 'a.b': message``."""
    first = error.errors(include_url=False, include_input=False)[0]
    location = ".".join(str(part) for part in first.get("loc", ())) or "(top level)"
    # keys come from the file: escape them so that a message stays one line
    return f"field '{one_line(location)}': {one_line(str(first.get('msg', 'invalid')))}"


def one_line(text: str) -> str:
    """``text`` with control characters escaped (a key from a file may hold a newline)."""
    return text.encode("unicode_escape").decode("ascii") if not text.isprintable() else text


def parse_file(schema: type[Model], path: str | Path, error: type[MetapruneError] = ConfigError) -> Model:
    """Read ``path`` (JSON, UTF-8, no symlink, at most :data:`MAX_JSON_BYTES`) and validate it against ``schema``.

    Each problem is one ``error`` line: a missing file, a folder, bad UTF-8, bad JSON, a bad field.
    """
    path = Path(path)
    if path.is_dir():
        raise error(f"{path} is a directory, not a file")
    raw = read_regular_file(path, MAX_JSON_BYTES, "file", error)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as problem:
        raise error(f"{path} is not UTF-8 text (byte {problem.start})") from None
    return validate(schema, parse_json_bytes(text, str(path), error), str(path), error)
