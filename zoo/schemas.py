"""Typed schemas of the files the zoo reads: the index, a run's ``report.json`` and ``architecture.json``.

Everything the zoo reads from an index, a download or a run directory is untrusted input. It is
parsed once (bounded size, bounded nesting, strict UTF-8) and validated with pydantic, and any
problem becomes one :class:`~metaprune.errors.ZooError` line naming the file and the field::

    index https://example.org/index.json: field entries[0].flops.pruned: Input should be a valid integer

Numbers are strict (``true`` is not a size, ``"3"`` is not a FLOPs count) and finite (no NaN or
infinity); unknown extra keys are kept, so newer files stay readable.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, Field, ValidationError

from metaprune import schemas
from metaprune.errors import ZooError
from metaprune.prune.saving import ArchitectureFile  # noqa: F401  (one schema of architecture.json, re-exported)
from metaprune.schemas import MAX_JSON_BYTES, OpenModel

NonNegativeInt = Annotated[int, Field(ge=0)]
NonNegativeNumber = Annotated[float, Field(ge=0)]
Accuracy = Annotated[float, Field(ge=0, le=1)]

Schema = TypeVar("Schema", bound=BaseModel)

#: The zoo's files keep extra keys (newer writers stay readable); numbers are strict and finite.
Strict = OpenModel


def _location(loc: tuple[int | str, ...]) -> str:
    """``('entries', 0, 'flops', 'pruned')`` as ``entries[0].flops.pruned``."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return schemas.one_line(text) or "(top level)"


def describe_validation_error(error: ValidationError, source: str) -> str:
    """One line for the first problem of ``error``: the file, the field, what was wrong (never the value itself)."""
    first = error.errors(include_url=False, include_input=False)[0]
    field = _location(tuple(first["loc"]))
    message = str(first["msg"]).removeprefix("Value error, ")
    if first["type"] == "missing":
        return f"{source}: missing required field {field}"
    count = error.error_count()
    more = f" (and {count - 1} more problem{'s' if count > 2 else ''})" if count > 1 else ""
    return f"{source}: field {field}: {message}{more}"


def validate(schema: type[Schema], data: Any, source: str) -> Schema:
    """``data`` validated against ``schema``; one :class:`ZooError` line naming ``source`` and the field."""
    try:
        return schema.model_validate(data)
    except ValidationError as error:
        raise ZooError(describe_validation_error(error, source)) from None


def parse_json_bytes(raw: bytes | str, source: str) -> Any:
    """The JSON value of ``raw``, or one :class:`ZooError` naming ``source``."""
    return schemas.parse_json_bytes(raw, source, ZooError)


def read_regular_file(path: Path, max_bytes: int, what: str = "file") -> bytes:
    """The bytes of ``path`` (no symlinks, no non-files, at most ``max_bytes``), or one :class:`ZooError`."""
    return schemas.read_regular_file(path, max_bytes, what, ZooError)


def read_json_file(path: Path, schema: type[Schema], *, max_bytes: int = MAX_JSON_BYTES,
                   missing: str | None = None) -> tuple[Schema, Any]:
    """Read, parse and validate a JSON file; returns (the validated model, the raw parsed value)."""
    path = Path(path)
    if missing is not None and not path.exists() and not path.is_symlink():
        raise ZooError(missing)
    data = parse_json_bytes(read_regular_file(path, max_bytes), str(path))
    return validate(schema, data, str(path)), data


# --- run directory files --------------------------------------------------------------------------------


class ReportSide(Strict):
    """The ``dense`` or ``pruned`` figures of a report."""

    flops: NonNegativeNumber
    params: NonNegativeNumber
    test_accuracy: Accuracy | None = None  # required for kinds that `zoo verify` re-measures (see rundir)
    val_accuracy: Accuracy | None = None
    latency_ms: NonNegativeNumber | None = None
    test_spearman: Annotated[float, Field(ge=-100, le=100)] | None = None  # x100, sentence encoders


class ReportFile(Strict):
    """The keys of ``report.json`` the zoo relies on (the card, the index entry, ``verify``)."""

    model: str
    dataset: str
    pattern: str
    budget: dict[str, Any]
    dense: ReportSide
    pruned: ReportSide
    layer_keep_ratios: dict[str, Annotated[float, Field(ge=0, le=1)]]
    command: str
    criterion: str | None = None
    schedule: str | None = None
    seed: int | None = None
    wall_time_s: Annotated[float, Field(allow_inf_nan=True)] | None = None  # NaN: not measured
    speedup: dict[str, float | None] | None = None
    metaprune_version: str | None = None
