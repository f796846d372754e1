"""``metaprune profile``: measure a model's latency table on this machine, or reuse the cached one.

:func:`profile_model` (1) times every conv/linear layer alone, at its batch and input size, on a
grid of input widths x output widths between ``min_keep`` and the dense width that brackets every
step of the CPU's kernels (:func:`grid_axis`; layers of one shape share a grid); (2) prunes copies
of the model to a few whole-network plans (uniform keep ratios and seeded random ones), times each
against the dense model, and fits the predictor's coefficients (:mod:`metaprune.latency.predictor`)
by non-negative least squares; (3) measures ``validation`` further random plans that the fit did
not see, and records the prediction error on them. Every timing is warm-up + median, in this
process (:mod:`metaprune.latency.timing`), and every figure a median of ``rounds`` passes.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import random
import statistics
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from metaprune.errors import ConfigError
from metaprune.latency.predictor import FEATURES, LatencyCostModel, is_depthwise
from metaprune.latency.table import LatencyTable, LayerGrid, TableKey, cache_dir
from metaprune.latency.timing import (
    check_runtime,
    check_statistic,
    forward_callable,
    hardware_name,
    measure_ms,
    median_ms,
    runtime_version,
    torch_threads,
)
from metaprune.prune.cost import GroupCostModel
from metaprune.prune.groups import CONV_LINEAR, ModelGroups, layer_widths
from metaprune.prune.structured import remove_lowest

_LAYER_CLASSES = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


@dataclass(frozen=True)
class ProfileSettings:
    """How a table is measured: the key fields (``batch``, ``threads``, ``runtime``) and the effort.

    Attributes:
        batch: batch size of every timed call.
        threads: intra-op threads (PyTorch) or ONNX Runtime intra-op threads.
        runtime: ``torch`` (eager) or ``onnxruntime``.
        points: widths per grid axis, evenly spread from ``min_keep`` to dense (multiples of 8); ``0`` (the
            default): the kernel-block grid of :func:`grid_axis`, which follows the steps of vectorised kernels.
        min_keep: the narrowest width measured, as a fraction of the dense width.
        plans: whole networks measured to fit the coefficients (5 uniform, the rest random).
        validation: random whole networks measured only to report the prediction error.
        warmup, repeats: untimed and timed calls of each measurement.
        rounds: passes over the layer grids (a point is the median of its passes) and rounds over the whole
            networks (each timed between two timings of the dense one; a network's figure is the median over
            rounds of its ratio to the dense timings around it).
        statistic: ``median`` or ``min`` of the timed calls (see :data:`~metaprune.latency.timing.STATISTICS`).
        seed: seeds the random plans and inputs.
    """

    batch: int = 1
    threads: int = 1
    runtime: str = "torch"
    points: int = 0
    min_keep: float = 0.1
    plans: int = 12
    validation: int = 3
    warmup: int = 3
    repeats: int = 15
    rounds: int = 3
    statistic: str = "median"
    seed: int = 0

    def __post_init__(self) -> None:
        check_runtime(self.runtime)
        check_statistic(self.statistic)
        if self.statistic == "cpu" and self.threads > 1:
            raise ConfigError("--statistic cpu adds up the CPU time of every thread: use it with --threads 1")
        if (self.batch < 1 or self.threads < 1 or self.points < 0 or self.points == 1 or self.plans < 2
                or self.validation < 0 or self.rounds < 1):
            raise ConfigError("profile needs batch >= 1, threads >= 1, points 0 (kernel blocks) or >= 2, plans >= 2, "
                              "validation >= 0, rounds >= 1; got "
                              f"{self.batch}, {self.threads}, {self.points}, {self.plans}, {self.validation}, "
                              f"{self.rounds}")
        if not 0.0 < self.min_keep <= 1.0:
            raise ConfigError(f"min_keep must be in (0, 1], got {self.min_keep}")


def architecture_fingerprint(model: nn.Module) -> str:
    """``name@hash``: the model's registry name (else its class) and a hash of every parameter's name and shape."""
    from metaprune.models import model_spec

    try:
        name = str(model_spec(model)["name"]).replace("/", "_").replace(":", "_")
    except Exception:  # a model built outside the registry
        name = type(model).__name__
    shapes = [(key, list(value.shape)) for key, value in model.state_dict().items()]
    return f"{name}@{hashlib.sha256(json.dumps(shapes).encode()).hexdigest()[:12]}"


def batched(example_input: torch.Tensor, batch: int, seed: int = 0) -> torch.Tensor:
    """Seeded normal inputs of the example's shape with batch size ``batch``."""
    if not isinstance(example_input, torch.Tensor) or not example_input.is_floating_point():
        raise ConfigError("latency tables need one floating-point input tensor (an image or feature batch)")
    generator = torch.Generator().manual_seed(seed)
    return torch.randn((batch, *example_input.shape[1:]), generator=generator, dtype=example_input.dtype)


def table_key(model: nn.Module, example_input: torch.Tensor, settings: ProfileSettings) -> TableKey:
    """The key of this model's table on this machine under ``settings``."""
    shape = (settings.batch, *[int(size) for size in example_input.shape[1:]])
    return TableKey(hardware_name(), settings.runtime, settings.threads, settings.batch, shape,
                    runtime_version(settings.runtime), architecture_fingerprint(model), settings.statistic)


#: Grid widths are multiples of this (where the layer is at least this wide): the widths that vectorised
#: kernels run at full speed and that ``--round-to 8`` plans land on.
GRID_MULTIPLE = 8
#: Axes up to this width are measured at every width (``points=0``).
FULL_RESOLUTION = 16
#: At most this many widths per axis of the kernel-block grid: wide layers (hundreds of channels) get this
#: many evenly spread block boundaries instead of all of them, so a grid stays at most this squared.
MAX_AXIS_POINTS = 24


def _axis(width: int, affected: bool, min_keep: float, points: int, multiple: int) -> list[int]:
    if not affected:
        return [width]
    narrowest = max(multiple, math.ceil(min_keep * width / multiple) * multiple)
    if points == 0:
        return grid_axis(width, narrowest, multiple)
    if width >= 2 * GRID_MULTIPLE:
        multiple = math.lcm(multiple, GRID_MULTIPLE)
    widths = {max(multiple, round(width * (min_keep + (1 - min_keep) * step / (points - 1)) / multiple) * multiple)
              for step in range(points)}
    return sorted({min(width, value) for value in widths} | {width, min(width, narrowest)})


def grid_axis(width: int, narrowest: int, multiple: int = 1) -> list[int]:
    """The kernel-block grid of one axis: every width from ``narrowest`` up to :data:`FULL_RESOLUTION`, then
    every multiple of :data:`GRID_MULTIPLE` *and the width after it*, up to ``width`` (widths are multiples of
    ``multiple``, a grouped convolution's groups).

    A CPU convolution's time is a staircase in its widths, not a line: oneDNN vectorises channels in blocks of
    8 or 16 and switches algorithms with the width, so one channel past a block boundary can cost 2-4x (measured
    here, batch 64, ResNet-20 shapes: a 3x3 conv at 16x16 pixels takes 0.6 ms at 14 channels in and out, 2.4 ms
    at 16 and 4.2 ms at 17). Interpolating linearly between multiples of 8 puts 17 channels at 1/8 of that jump;
    measuring both sides of every boundary puts the jump where it is. A wide axis keeps at most
    :data:`MAX_AXIS_POINTS` widths (evenly spread boundaries), so the grid of a 2048-channel layer stays small.
    """
    steps = set(range(narrowest, min(width, FULL_RESOLUTION) + 1)) | {width, narrowest}
    for boundary in range(GRID_MULTIPLE, min(width, FULL_RESOLUTION) + 1, GRID_MULTIPLE):
        steps |= {step for step in (boundary, boundary + 1) if narrowest <= step <= width}
    wide = [boundary for boundary in range(GRID_MULTIPLE, width + 1, GRID_MULTIPLE)
            if boundary > FULL_RESOLUTION and boundary >= narrowest]
    room = max(2, (MAX_AXIS_POINTS - len(steps)) // 2)  # boundary pairs that fit beside the narrow part
    if len(wide) > room:  # a wide axis: evenly spread boundaries, both ends kept
        wide = sorted({wide[round(index * (len(wide) - 1) / (room - 1))] for index in range(room)})
    for boundary in wide:
        steps |= {boundary, boundary + 1}
    return sorted(step for step in steps if narrowest <= step <= width and step % multiple == 0)


def _layer_module(layer: nn.Module, in_width: int, out_width: int) -> nn.Module:
    """A fresh layer like ``layer`` with other widths (a depthwise one keeps one group per channel)."""
    cls = next(kind for kind in _LAYER_CLASSES if isinstance(layer, kind))
    if cls is nn.Linear:
        return nn.Linear(in_width, out_width, bias=layer.bias is not None)
    groups = out_width if is_depthwise(layer) else layer.groups
    options = {"kernel_size": layer.kernel_size, "stride": layer.stride, "padding": layer.padding,
               "dilation": layer.dilation, "groups": groups, "bias": layer.bias is not None}
    if cls in _LAYER_CLASSES[:3]:
        options["output_padding"] = layer.output_padding
    else:
        options["padding_mode"] = layer.padding_mode
    return cls(in_width if not is_depthwise(layer) else out_width, out_width, **options)


def _layer_inputs(model: nn.Module, inputs: torch.Tensor, names: list[str]) -> dict[str, tuple[int, ...]]:
    """The input shape of each named layer on ``inputs``."""
    modules = dict(model.named_modules())
    shapes: dict[str, tuple[int, ...]] = {}

    def record(name: str):
        def hook(_module: nn.Module, args: tuple) -> None:  # a pre-hook's return value would replace the inputs
            shapes.setdefault(name, tuple(args[0].shape))
        return hook

    handles = [modules[name].register_forward_pre_hook(record(name)) for name in names]
    try:
        with torch.no_grad():
            model(inputs)
    finally:
        for handle in handles:
            handle.remove()
    return shapes


def measure_grids(model: nn.Module, example_input: torch.Tensor, settings: ProfileSettings
                  ) -> tuple[dict[str, str], dict[str, LayerGrid]]:
    """Per-layer grids: which grid each conv/linear layer uses, and every distinct grid measured.

    Every grid point is the median of ``settings.rounds`` timings taken in separate passes over all the
    grids: on a CPU shared with other jobs (or a hyper-thread sibling) one timing of a conv can be off by 2x
    either way, and passes minutes apart see different neighbours.
    """
    groups = ModelGroups(model, example_input[:1])
    cost = GroupCostModel(groups)
    modules = dict(model.named_modules())
    names = [name for name in cost.term_names
             if isinstance(modules.get(name), CONV_LINEAR) and cost.term_names.count(name) == 1]
    shapes = _layer_inputs(model, batched(example_input, settings.batch, settings.seed), names)
    layers: dict[str, str] = {}
    todo: dict[str, tuple[nn.Module, tuple[int, ...], list[int], list[int]]] = {}
    for name in names:
        layer, index = modules[name], cost.term_names.index(name)
        in_width, out_width = layer_widths(layer)
        multiple = 1 if is_depthwise(layer) or isinstance(layer, nn.Linear) else layer.groups
        ins = [in_width] if is_depthwise(layer) else _axis(in_width, bool(cost.term_in[index].any()), settings.min_keep,
                                                           settings.points, multiple)
        outs = _axis(out_width, bool(cost.term_out[index].any()), settings.min_keep, settings.points,
                     1 if is_depthwise(layer) or isinstance(layer, nn.Linear) else multiple)
        shape = shapes[name]
        signature = "|".join(str(part) for part in (
            type(layer).__name__, getattr(layer, "kernel_size", ""), getattr(layer, "stride", ""),
            getattr(layer, "padding", ""), getattr(layer, "dilation", ""),
            "dw" if is_depthwise(layer) else getattr(layer, "groups", 1), layer.bias is not None, shape, ins, outs))
        layers[name] = signature
        todo.setdefault(signature, (layer, shape, ins, outs))
    passes = [{signature: [[_time_layer(layer, shape, cin, cout, settings) for cout in outs] for cin in ins]
               for signature, (layer, shape, ins, outs) in todo.items()} for _ in range(settings.rounds)]
    grids = {signature: LayerGrid(ins, outs, [[statistics.median(timings[signature][i][o] for timings in passes)
                                               for o in range(len(outs))] for i in range(len(ins))])
             for signature, (_, _, ins, outs) in todo.items()}
    return layers, grids


def _time_layer(layer: nn.Module, shape: tuple[int, ...], in_width: int, out_width: int,
                settings: ProfileSettings) -> float:
    module = _layer_module(layer, in_width, out_width).eval()
    channel_dim = len(shape) - 1 if isinstance(layer, nn.Linear) else 1
    sizes = list(shape)
    sizes[channel_dim] = out_width if is_depthwise(layer) else in_width
    generator = torch.Generator().manual_seed(settings.seed)
    inputs = torch.randn(sizes, generator=generator)
    return median_ms(forward_callable(module, inputs, settings.runtime, settings.threads),
                     warmup=settings.warmup, repeats=settings.repeats, statistic=settings.statistic)


def plan_counts(groups: ModelGroups, ratios: list[float], min_keep: float) -> dict[str, int]:
    """Keep counts of every group at ``ratios`` (one per group), at least ``min_keep`` and in whole steps."""
    counts = {}
    for group, ratio in zip(groups.groups, ratios):
        size = groups.current_size(group)
        step = group.step if size % group.step == 0 else 1
        keep = max(round(ratio * size), math.ceil(min_keep * size), 1)
        counts[group.name] = min(size, math.ceil(keep / step) * step)
    return counts


def pruned_copy(model: nn.Module, example_input: torch.Tensor, keep_counts: dict[str, int]
                ) -> tuple[nn.Module, torch.Tensor]:
    """A copy of ``model`` with each group cut to ``keep_counts`` (its first channels removed), and the
    counts it actually keeps (whole steps), in group order."""
    pruned = copy.deepcopy(model).eval()
    groups = ModelGroups(pruned, example_input[:1])
    scores = {group.name: torch.arange(groups.current_size(group), dtype=torch.float64) for group in groups.groups}
    remove_lowest(groups, scores, keep_counts)
    kept = torch.tensor([float(groups.current_size(group)) for group in groups.groups], dtype=torch.float64)
    return pruned, kept


def _plans(groups: ModelGroups, settings: ProfileSettings, count: int, seed: int, uniform: bool) -> list[list[float]]:
    generator = random.Random(seed)
    ratios = []
    if uniform:
        ratios += [[ratio] * len(groups.groups) for ratio in (1.0, 0.75, 0.5, 0.3, settings.min_keep)][:count]
    while len(ratios) < count:
        ratios.append([generator.uniform(settings.min_keep, 1.0) for _ in groups.groups])
    return ratios


def _measure_plans(model: nn.Module, example_input: torch.Tensor, predictor: LatencyCostModel,
                   ratio_sets: list[list[float]], settings: ProfileSettings, reference_ms: float | None = None
                   ) -> tuple[list[dict], float]:
    """Whole networks at ``ratio_sets``, each timed between two timings of the dense ``model``, in
    ``settings.rounds`` rounds over all of them.

    A network's ``dense_ratio`` is the median over rounds of its time over the mean of the dense times
    around it, and its ``measured_ms`` that ratio times ``reference_ms`` (default: the median of the dense
    times): the fit sees every network's ratio to the dense one at the moment it ran, which cancels what a
    busy machine's load does over minutes (lone timings of the same network there differ by tens of
    percent). ``raw_ms`` keeps the median timing itself. Returns the rows and the reference used.
    """
    inputs = batched(example_input, settings.batch, settings.seed)
    groups = ModelGroups(model, example_input[:1])
    options = {"runtime": settings.runtime, "threads": settings.threads, "warmup": settings.warmup + 2,
               "repeats": settings.repeats + 6, "statistic": settings.statistic}
    networks = [pruned_copy(model, example_input, plan_counts(groups, ratios, settings.min_keep))
                for ratios in ratio_sets]
    before = measure_ms(model, inputs, **options)
    dense_times, times, ratios = [before], [[] for _ in networks], [[] for _ in networks]
    for _ in range(settings.rounds):
        for index, (pruned, _) in enumerate(networks):
            measured = measure_ms(pruned, inputs, **options)
            after = measure_ms(model, inputs, **options)
            times[index].append(measured)
            ratios[index].append(measured / ((before + after) / 2))
            dense_times.append(after)
            before = after
    reference = statistics.median(dense_times) if reference_ms is None else reference_ms
    rows = []
    for (_, kept), network_times, network_ratios in zip(networks, times, ratios):
        ratio = statistics.median(network_ratios)
        rows.append({"keep_counts": [int(value) for value in kept.tolist()], "raw_ms": statistics.median(network_times),
                     "dense_ratio": ratio, "measured_ms": ratio * reference, "features": predictor.features(kept).tolist()})
    return rows, reference


def fit_coefficients(rows: list[dict]) -> dict[str, float]:
    """Non-negative least squares of measured latency on the features (columns scaled to unit size first)."""
    from scipy.optimize import nnls

    features = torch.tensor([row["features"] for row in rows], dtype=torch.float64)
    measured = torch.tensor([row["measured_ms"] for row in rows], dtype=torch.float64)
    scale = features.abs().max(dim=0).values.clamp(min=1e-12)
    solution, _ = nnls((features / scale).numpy(), measured.numpy())
    return {name: float(value / size) for name, value, size in zip(FEATURES, solution.tolist(), scale.tolist())}


def profile_model(model: nn.Module, example_input: torch.Tensor, settings: ProfileSettings | None = None
                  ) -> LatencyTable:
    """Measure the latency table of ``model`` (eval mode, left unchanged) on ``example_input``'s shape."""
    settings = settings or ProfileSettings()
    model = copy.deepcopy(model).eval()
    key = table_key(model, example_input, settings)
    with torch_threads(settings.threads):
        layers, grids = measure_grids(model, example_input, settings)
        table = LatencyTable(key, layers, grids)
        groups = ModelGroups(model, example_input[:1])
        predictor = LatencyCostModel(groups, table)
        calibration, reference = _measure_plans(model, example_input, predictor,
                                                _plans(groups, settings, settings.plans, settings.seed, True), settings)
        table.coefficients = fit_coefficients(calibration)
        table.calibration = calibration
        table.dense_ms = reference
        predictor = LatencyCostModel(groups, table)
        validation, _ = _measure_plans(model, example_input, predictor,
                                       _plans(groups, settings, settings.validation, settings.seed + 1, False),
                                       settings, reference)
    for row in calibration + validation:
        row["predicted_ms"] = float(torch.tensor(row["features"], dtype=torch.float64) @ predictor.coefficients)
        row["error"] = row["predicted_ms"] / row["measured_ms"] - 1.0
    table.validation = validation
    return table


def load_or_profile(model: nn.Module, example_input: torch.Tensor, settings: ProfileSettings | None = None, *,
                    table_path: str | Path | None = None, refresh: bool = False) -> tuple[LatencyTable, Path, bool]:
    """The table of ``model`` under ``settings`` on this machine: ``table_path`` if given (checked against this
    machine and settings), else the cached one, else a fresh profile (then cached).

    Returns ``(table, path, measured_now)``.
    """
    settings = settings or ProfileSettings()
    key = table_key(model, example_input, settings)
    if table_path is not None:
        table = LatencyTable.load(table_path)
        table.check_key(key, f"latency table {table_path}")
        return table, Path(table_path), False
    path = cache_dir() / key.file_name()
    if path.is_file() and not refresh:
        table = LatencyTable.load(path)
        table.check_key(key, f"cached latency table {path}")
        return table, path, False
    table = profile_model(model, example_input, settings)
    table.save(path)
    return table, path, True
