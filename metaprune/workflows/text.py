"""The text prune job: a pretrained sentence encoder, pruned without retraining, scored on STS-B.

``metaprune prune --model minilm --data stsb --data-root DIR`` lands here. Patterns:

* ``unstructured`` / ``n:m``: layer-by-layer masks with sequential calibration
  (:mod:`metaprune.prune.layerwise`; criteria ``magnitude``, ``wanda``, ``sparsegpt``); the budget
  is the fraction of weights kept in every ``Linear`` of the encoder (``sparsity = 1 - budget``).
* ``head-ffn``: heads and FFN neurons removed under a FLOPs budget (Kwon et al.,
  :mod:`metaprune.prune.head_ffn`; criteria ``fisher-mask`` (Fisher search, rearrangement,
  least-squares tuning, the tuning kept only if it raises dev Spearman) and ``magnitude`` (the
  same fraction of every layer, by weight norm)).

Calibration sentences come from ``--calibration-text`` (one per line) or the STS-B train split;
the Fisher of ``fisher-mask`` uses STS-B train pairs (the ``sts`` loss) unless only plain text is
given (the label-free ``embedding`` loss). Dev Spearman is for selection, test for reporting.
"""

from __future__ import annotations

import copy
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from metaprune.data.stsb import TEXT_DATASETS, StsSplit, StsSplits, read_calibration_text, sts_spearman
from metaprune.errors import ConfigError, PruneError
from metaprune.flops import count_flops, count_nonzero_params, count_params, effective_flops, measure_latency
from metaprune.models.minilm import TEXT_MODELS, TEXT_RUN_FILE, SentenceEncoder, save_encoder
from metaprune.prune import head_ffn, sparsegpt, wanda  # noqa: F401  (importing registers the methods)
from metaprune.prune.budget import Budget
from metaprune.prune.embedding_distill import DistillOptions, distill_embeddings
from metaprune.prune.head_ffn_timing import measure_unit_times
from metaprune.prune.head_ffn_tuning import remove_structure, tune_masks
from metaprune.prune.layerwise import (
    LAYERWISE_METHODS,
    LayerwiseOptions,
    SparsityTarget,
    options_record,
    prune_blocks,
    reached_sparsity,
    recommended_options,
    report_rows,
)
from metaprune.prune.report import ModelFigures, PruneReport
from metaprune.rundir import REPORT_FILE, check_out_dir, staged_files, write_json
from metaprune.version import __version__

PATTERNS = ("unstructured", "n:m", "head-ffn")
HEAD_FFN_CRITERIA = ("fisher-mask", "magnitude")
#: Sequence length and batch sizes of the FLOPs and latency figures.
SEQUENCE_LENGTH = 128
LATENCY_BATCHES = (1, 32)


def is_text_task(model: str, data: str) -> bool:
    """Whether ``metaprune prune`` options name a text model or data set."""
    return model in TEXT_MODELS or data in TEXT_DATASETS


@dataclass(frozen=True)
class TextPruneOptions:
    """What a text prune run is told.

    Attributes:
        model: a name from :data:`~metaprune.models.minilm.TEXT_MODELS`.
        data: a name from :data:`~metaprune.data.stsb.TEXT_DATASETS`; ``data_root`` its folder.
        pattern: ``unstructured``, ``n:m`` or ``head-ffn``.
        criterion: ``magnitude``/``wanda``/``sparsegpt`` (masks) or ``fisher-mask``/``magnitude`` (head-ffn).
        budget: kept fraction of weights (unstructured) or of FLOPs (head-ffn); unused for n:m.
        n_m: the N:M pattern.
        calibration_text: a plain-text file, one calibration sentence per line (default: STS-B train).
        calibration_size: calibration sentences (and Fisher pairs) used.
        fisher_loss: ``sts`` or ``embedding`` (default: ``sts`` with STS-B train pairs, ``embedding`` with text).
        latency_speedup: head-ffn with fisher-mask: also keep the layers' predicted CPU time (unit times
            measured on this machine, :mod:`metaprune.prune.head_ffn_timing`) at most dense / this.
        round_to: head-ffn with fisher-mask: kept FFN neurons per layer rounded to a multiple of this.
        selection_pairs: dev pairs (a seeded sample) on which fisher-mask decides whether to keep the
            least-squares tuning (None: all of dev); the reported dev and test figures use every pair.
        distill_epochs: head-ffn only: epochs of embedding distillation from the dense model on STS-B
            train sentences after pruning (0 = off; :mod:`metaprune.prune.embedding_distill`), the best
            epoch by dev Spearman kept; ``distill_lr``, ``distill_sentences`` (None = all) tune it.
        layerwise: mask patterns: allocation across blocks (uniform, owl), dense targets, bias correction
            (:class:`~metaprune.prune.layerwise.LayerwiseOptions`; None: the criterion's recommended ones).
        latency: measure CPU latency (batch 1 and 32, sequence 128) with ``threads`` threads.
        out, overwrite: the run directory; command: the reproducing command.
    """

    data_root: str | None
    budget: Budget | None = None
    model: str = "minilm"
    data: str = "stsb"
    pattern: str = "unstructured"
    criterion: str = "wanda"
    n_m: tuple[int, int] = (2, 4)
    calibration_text: str | None = None
    calibration_size: int = 256
    fisher_loss: str | None = None
    latency_speedup: float | None = None
    round_to: int = 1
    selection_pairs: int | None = 500
    distill_epochs: int = 0
    distill_lr: float = 1e-4
    distill_sentences: int | None = None
    layerwise: LayerwiseOptions | None = None
    seed: int = 0
    latency: bool = True
    threads: int = 1
    out: str | None = None
    overwrite: bool = False
    command: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        TEXT_MODELS.get(self.model)
        TEXT_DATASETS.get(self.data)
        if self.data_root is None:
            raise ConfigError(f"--data {self.data} reads local files: pass --data-root DIR")
        if self.pattern not in PATTERNS:
            raise ConfigError(f"unknown pattern {self.pattern!r} for a text model; choose from {', '.join(PATTERNS)}")
        allowed = HEAD_FFN_CRITERIA if self.pattern == "head-ffn" else tuple(LAYERWISE_METHODS.names())
        if self.criterion not in allowed:
            raise ConfigError(f"criterion {self.criterion!r} does not apply to --pattern {self.pattern}; "
                              f"choose from {', '.join(allowed)}")
        if self.pattern != "n:m" and self.budget is None:
            raise ConfigError(f"--pattern {self.pattern} needs --budget (kept fraction) or --speedup")
        self.target()  # validates sparsity and N:M
        if self.calibration_size < 1:
            raise ConfigError(f"calibration size must be positive, got {self.calibration_size}")
        if self.fisher_loss is not None:
            head_ffn.FISHER_LOSSES.get(self.fisher_loss)
        if self.latency_speedup is not None and (self.pattern != "head-ffn" or self.criterion != "fisher-mask"
                                                 or not self.latency_speedup >= 1.0):
            raise ConfigError(f"--latency-speedup for a text model applies to --pattern head-ffn --criterion "
                              f"fisher-mask with a value >= 1, got {self.latency_speedup} with --pattern "
                              f"{self.pattern} --criterion {self.criterion}")
        if self.round_to < 1 or (self.round_to > 1 and self.criterion != "fisher-mask"):
            raise ConfigError(f"--round-to must be >= 1 and applies to --criterion fisher-mask, got {self.round_to} "
                              f"with --criterion {self.criterion}")
        if self.selection_pairs is not None and self.selection_pairs < 2:
            raise ConfigError(f"selection needs at least 2 dev pairs, got {self.selection_pairs}")
        self.distill_options()  # validates the distillation settings
        if self.distill_epochs and self.pattern != "head-ffn":
            raise ConfigError(f"--distill-epochs applies to --pattern head-ffn only (training would refill the "
                              f"zeros of --pattern {self.pattern})")
        if self.out is not None:
            check_out_dir(self.out, overwrite=self.overwrite)

    def distill_options(self) -> DistillOptions:
        """The embedding-distillation settings of this run."""
        return DistillOptions(epochs=self.distill_epochs, lr=self.distill_lr, max_sentences=self.distill_sentences,
                              seed=self.seed)

    def target(self) -> SparsityTarget | None:
        """The per-layer mask target of a mask pattern (None for head-ffn)."""
        if self.pattern == "n:m":
            return SparsityTarget(n_m=tuple(self.n_m))  # type: ignore[arg-type]
        if self.pattern == "unstructured":
            return SparsityTarget(sparsity=1.0 - self.budget.flops_ratio)  # type: ignore[union-attr]
        return None


@dataclass
class TextPruneResult:
    """The pruned and dense encoders, the report and the run directory (if written)."""

    encoder: SentenceEncoder
    dense: SentenceEncoder
    report: PruneReport
    run_dir: Path | None


def calibration_sentences(options: TextPruneOptions, splits: StsSplits) -> list[str]:
    """``calibration_size`` sentences: the calibration text's first ones, or a seeded sample of STS-B train."""
    if options.calibration_text is not None:
        return read_calibration_text(options.calibration_text, options.calibration_size)
    sentences = splits.train.sentences()
    random.Random(options.seed).shuffle(sentences)
    return sentences[:options.calibration_size]


def tokenized_batches(encoder: SentenceEncoder, sentences: list[str], batch_size: int = 32) -> list[dict]:
    """Tokenized batches of ``sentences`` (each padded to its longest)."""
    return [encoder.tokenize(sentences[start:start + batch_size]) for start in range(0, len(sentences), batch_size)]


def fisher_batches(encoder: SentenceEncoder, options: TextPruneOptions, splits: StsSplits,
                   sentences: list[str]) -> tuple[str, list[head_ffn.CalibrationBatch]]:
    """The Fisher loss and its batches: STS-B train pairs (``sts``) or the calibration sentences (``embedding``)."""
    loss = options.fisher_loss or ("embedding" if options.calibration_text else "sts")
    if loss == "embedding":
        return loss, [head_ffn.CalibrationBatch(encoder.tokenize(sentences[start:start + 16]))
                      for start in range(0, len(sentences), 16)]
    pairs = list(range(len(splits.train)))
    random.Random(options.seed).shuffle(pairs)
    pairs = pairs[:options.calibration_size]
    train = splits.train
    return loss, [head_ffn.CalibrationBatch(encoder.tokenize([train.first[i] for i in chunk]),
                                            encoder.tokenize([train.second[i] for i in chunk]),
                                            torch.tensor([train.scores[i] / 5.0 for i in chunk]))
                  for chunk in (pairs[start:start + 16] for start in range(0, len(pairs), 16))]


def prune_head_ffn(encoder: SentenceEncoder, options: TextPruneOptions, splits: StsSplits, sentences: list[str],
                   dense_flops: int) -> dict[str, Any]:
    """Search, rearrange and tune head/FFN masks, then remove the masked units; returns report details."""
    model = encoder.model
    layers = head_ffn.encoder_layers(model)
    costs = head_ffn.UnitCosts.of(layers, SEQUENCE_LENGTH, dense_flops)
    max_flops = options.budget.flops_ratio * dense_flops  # type: ignore[union-attr]
    details: dict[str, Any] = {}
    seconds: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        seconds[name] = now - clock
        clock = now

    times, max_time = None, None
    if options.criterion == "magnitude":
        masks = head_ffn.uniform_masks(*head_ffn.magnitude_scores(layers), costs, max_flops)
    else:
        loss, batches = fisher_batches(encoder, options, splits, sentences)
        gradients = head_ffn.mask_gradients(model, layers, batches, encoder.forward, loss)
        lap("fisher")
        if options.latency_speedup is not None:
            times = measure_unit_times(model, layers)
            max_time = times.time(sum(p.heads for p in layers),
                                  sum(p.intermediate.out_features for p in layers)) / options.latency_speedup
            details["unit_times"] = times.to_dict()
        importance = gradients.importance()
        masks = head_ffn.search_masks(*importance, costs, max_flops, times, max_time)
        masks = head_ffn.round_neurons(masks, importance[1], options.round_to, costs, max_flops, times, max_time)
        rearranged = head_ffn.rearrange_masks(masks, gradients)
        lap("search_and_rearrange")
        tuned = tune_masks(model, copy.deepcopy(model), rearranged, tokenized_batches(encoder, sentences))
        lap("tuning")
        # least-squares tuning reconstructs hidden states, not the STS ranking: keep it only if dev says so
        selection = dev_sample(splits.dev, options.selection_pairs, options.seed)
        scores = {}
        for stage, candidate in (("rearranged", rearranged), ("tuned", tuned)):
            with head_ffn.applied_masks(layers, candidate):
                scores[stage] = sts_spearman(encoder.encode, selection)
        lap("selection")
        masks = tuned if scores["tuned"] >= scores["rearranged"] else rearranged
        details.update(fisher_loss=loss, dev_spearman_by_stage=scores, selection_pairs=len(selection),
                       tuned=masks is tuned, stage_seconds=seconds)
    heads, neurons = masks.kept()
    details.update(heads_per_layer=heads, neurons_per_layer=neurons,
                   predicted_flops_ratio=costs.flops(sum(heads), sum(neurons)) / dense_flops)
    if times is not None and max_time is not None:
        details["predicted_time_speedup"] = max_time * options.latency_speedup / times.time(sum(heads), sum(neurons))
    remove_structure(model, masks)
    return details


def dev_sample(dev: StsSplit, pairs: int | None, seed: int) -> StsSplit:
    """``pairs`` dev pairs drawn with ``seed`` (all of dev when ``pairs`` is None or not smaller)."""
    if pairs is None or pairs >= len(dev):
        return dev
    chosen = sorted(random.Random(seed).sample(range(len(dev)), pairs))
    return StsSplit(tuple(dev.first[i] for i in chosen), tuple(dev.second[i] for i in chosen),
                    tuple(dev.scores[i] for i in chosen))


def distill_run(encoder: SentenceEncoder, dense: SentenceEncoder, options: TextPruneOptions,
                splits: StsSplits) -> dict[str, Any]:
    """Embedding distillation of the pruned ``encoder`` from ``dense`` on STS-B train sentences, the best
    epoch (or none) by dev Spearman kept; returns the report's ``distill`` entry (with the retraining-free
    dev and test Spearman ``before`` it)."""
    before = {"dev_spearman": sts_spearman(encoder.encode, splits.dev),
              "test_spearman": sts_spearman(encoder.encode, splits.test)}
    result = distill_embeddings(encoder, dense, splits.train.sentences(), options.distill_options(),
                                select=lambda: sts_spearman(encoder.encode, splits.dev),
                                initial_score=before["dev_spearman"])
    return {**result.to_dict(), "lr": options.distill_lr, "loss": "cosine distance of normalised embeddings",
            "before": before}


def measure_encoder(encoder: SentenceEncoder, splits: StsSplits, masked: bool, latency: bool,
                    threads: int) -> tuple[ModelFigures, dict[str, Any]]:
    """FLOPs (batch 1, sequence 128; effective FLOPs for masks), parameters, latency (batch 1) and STS-B
    Spearman; the second value holds the Spearman figures and the batch-32 latency."""
    example = encoder.tokenize(["metaprune"], padding="max_length")
    flops = effective_flops(encoder.model, example) if masked else count_flops(encoder.model, example)
    figures = ModelFigures(flops=flops, params=count_params(encoder.model),
                           nonzero_params=count_nonzero_params(encoder.model))
    extra: dict[str, Any] = {"dev_spearman": sts_spearman(encoder.encode, splits.dev),
                             "test_spearman": sts_spearman(encoder.encode, splits.test)}
    if latency:
        timings = {}
        for batch in LATENCY_BATCHES:
            ids = example["input_ids"].expand(batch, -1).contiguous()
            timings[f"batch{batch}_ms"] = measure_latency(encoder.model, ids, repeats=10 if batch > 1 else 30,
                                                          warmup=2, threads=threads).median_ms
        figures.latency_ms = timings["batch1_ms"]
        extra["latency"] = {**timings, "threads": threads, "sequence_length": SEQUENCE_LENGTH}
    return figures, extra


def run_text_prune(options: TextPruneOptions,
                   dense_measures: tuple[ModelFigures, dict[str, Any]] | None = None) -> TextPruneResult:
    """Load, prune, measure and (with ``out``) save a text encoder run.

    ``dense_measures`` are the dense model's figures from an earlier run with the same data and
    latency settings (a benchmark measures the dense model once); the report then reuses them.
    """
    torch.manual_seed(options.seed)
    splits = TEXT_DATASETS.get(options.data)(options.data_root)
    sentences = calibration_sentences(options, splits)  # a bad calibration file fails before the model loads
    encoder = TEXT_MODELS.get(options.model)()
    dense = SentenceEncoder(copy.deepcopy(encoder.model), encoder.tokenizer, encoder.max_length)
    if dense_measures is None:
        dense_measures = measure_encoder(dense, splits, masked=False, latency=options.latency,
                                         threads=options.threads)
    dense_figures, dense_extra = copy.deepcopy(dense_measures)
    start, cpu_start = time.perf_counter(), time.process_time()
    target = options.target()
    details: dict[str, Any] = {}
    if target is not None:
        mask_options = options.layerwise or recommended_options(options.criterion)
        layer_reports = prune_blocks(encoder.model, encoder.model.encoder.layer, tokenized_batches(encoder, sentences),
                                     options.criterion, target, prefix="encoder.layer.", options=mask_options)
        details.update(per_layer=report_rows(layer_reports), layerwise=options_record(mask_options),
                       reached_sparsity=reached_sparsity(layer_reports))
        keep = {row["name"]: 1.0 - row["sparsity"] for row in details["per_layer"]}
    else:
        details.update(prune_head_ffn(encoder, options, splits, sentences, dense_figures.flops))
        keep = {f"encoder.layer.{i}": n / encoder.model.config.intermediate_size
                for i, n in enumerate(details["neurons_per_layer"])}
    prune_seconds = time.perf_counter() - start
    details["prune_cpu_s"] = time.process_time() - cpu_start  # what a busy machine's wall clock hides
    if options.distill_epochs:  # reported apart from the retraining-free pruning time
        details["distill"] = distill_run(encoder, dense, options, splits)
    figures, extra = measure_encoder(encoder, splits, masked=target is not None, latency=options.latency,
                                     threads=options.threads)
    report = PruneReport(
        model=options.model, dataset=options.data, pattern=options.pattern, criterion=options.criterion,
        schedule="oneshot",
        budget={"flops_ratio": options.budget.flops_ratio} if options.budget else {"n_m": list(options.n_m)},
        dense=dense_figures, pruned=figures, layer_keep_ratios=keep, wall_time_s=prune_seconds, seed=options.seed,
        command=options.command, metaprune_version=__version__,
        extra={"metric": "STS-B Spearman x100 (cosine of mean-pooled, normalised embeddings)",
               "dense": dense_extra, "pruned": extra, "prune_time_s": prune_seconds,
               "calibration": {"sentences": len(sentences), "source": options.calibration_text or "stsb train"},
               "target": target.label() if target else None, **details, **options.extra})
    check_text_budget(report, target)
    run_dir = None
    if options.out:
        with staged_files(options.out) as staging:
            save_encoder(encoder, staging)
            write_json(staging / REPORT_FILE, report.to_dict())
            write_json(staging / TEXT_RUN_FILE, {"model": options.model, "pattern": options.pattern})
        run_dir = Path(options.out)
    return TextPruneResult(encoder, dense, report, run_dir)


def check_text_budget(report: PruneReport, target: SparsityTarget | None) -> None:
    """PruneError unless the run kept its promise: the N:M density of every layer, the overall sparsity of the
    encoder's Linears within 0.5 points (an allocation may spread it unevenly), or the FLOPs budget within 2 %
    (head-ffn's search never exceeds it; a unit costs well under 2 % of the FLOPs)."""
    if target is not None:
        rows = report.extra["per_layer"]
        if target.n_m is not None:
            off = [row["name"] for row in rows if abs(row["sparsity"] - target.fraction) > 0.01]
            if off:
                raise PruneError(f"layers {off[:3]} miss the {target.label()} sparsity")
        elif abs(report.extra["reached_sparsity"] - target.fraction) > 0.005:  # blocks may differ (allocation)
            raise PruneError(f"the encoder's Linears are {report.extra['reached_sparsity']:.2%} sparse for a "
                             f"{target.label()} target")
        return
    achieved = report.pruned.flops / report.dense.flops
    promised = report.budget["flops_ratio"]
    if achieved > promised * 1.02:
        raise PruneError(f"the pruned encoder keeps {achieved:.4f} of the FLOPs for a budget of {promised:.4f}")



def is_text_run(run_dir: str | Path) -> bool:
    """Whether ``run_dir`` holds a text-encoder run (written by :func:`run_text_prune`)."""
    return (Path(run_dir) / TEXT_RUN_FILE).is_file()


def evaluate_text_run(run_dir: str | Path, data_root: str | None, latency: bool = True,
                      threads: int = 1) -> tuple[PruneReport, ModelFigures, dict[str, Any]]:
    """Re-measure a text run's encoder: the saved report, and the measured figures and STS-B dev/test
    Spearman (:func:`measure_encoder`) on the data under ``data_root``.

    Raises:
        ConfigError: no ``data_root`` (the STS-B files are local); DataError: the files are not there.
    """
    from metaprune.models.minilm import load_encoder

    report = PruneReport.load(Path(run_dir) / REPORT_FILE)
    if data_root is None:
        raise ConfigError(f"{run_dir} is a text run on {report.dataset}: pass --data-root DIR with its files")
    splits = TEXT_DATASETS.get(report.dataset)(data_root)
    encoder = load_encoder(run_dir)
    figures, extra = measure_encoder(encoder, splits, masked=report.pattern in ("unstructured", "n:m"),
                                     latency=latency, threads=threads)
    return report, figures, extra
