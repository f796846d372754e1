"""MiniLM-L6 (all-MiniLM-L6-v2) on STS-B: retraining-free pruning side by side (issue 17).

Masks (magnitude, Wanda, SparseGPT at 50-80 % and 2:4 / 4:8, every Linear of the encoder,
sequential calibration) and structured heads + FFN neurons at 1.5x and 2x fewer FLOPs (Fisher
mask search of Kwon et al. vs the uniform magnitude baseline). For each: STS-B test Spearman x100,
pruning wall time; for the structured models and the dense one: CPU latency at batch 1 and 32,
sequence 128.

    python benchmarks/minilm_stsb.py --part masks        # writes results/minilm_stsb_masks.json
    python benchmarks/minilm_stsb.py --part structured   # writes results/minilm_stsb_structured.json
    python benchmarks/minilm_stsb.py --part latency      # dense + structured shapes: minilm_stsb_latency.json
    python benchmarks/minilm_stsb.py --part report       # merges them: minilm_stsb.{json,md,png}

(``--part all`` runs the four in turn.) The data is the shared STS-B copy (``--data-root``).
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path
from typing import Any

import torch
from common import RESULTS, markdown_table, write_json

DEFAULT_ROOT = Path(__file__).resolve().parents[2] / "shared" / "data" / "stsb"
MASK_TARGETS = ("50%", "60%", "70%", "80%", "2:4", "4:8")
MASK_METHODS = ("magnitude", "wanda", "sparsegpt", "sparsegpt-dt512")
#: Mask rows beyond the published methods: label -> (criterion, LayerwiseOptions keywords, calibration sentences
#: or None for --calibration). ``sparsegpt-dt512``: SparseGPT reconstructing the dense model's layer outputs
#: (dense targets) from 512 calibration sentences, the best variant on STS-B dev (README, Transformers).
MASK_VARIANTS = {"sparsegpt-dt512": ("sparsegpt", {"dense_targets": True}, 512)}
SPEEDUPS = (1.5, 2.0)
#: Order of the mask runs: the issue's targets (70 %, 80 %, 2:4; SparseGPT vs Wanda) first, then the rest.
PRIORITY = [("sparsegpt", "70%"), ("wanda", "70%"), ("sparsegpt", "2:4"), ("wanda", "2:4"), ("sparsegpt", "80%"),
            ("wanda", "80%"), ("magnitude", "50%"), ("magnitude", "70%"), ("magnitude", "2:4"), ("wanda", "50%"),
            ("sparsegpt", "50%"), ("wanda", "4:8"), ("sparsegpt", "4:8"), ("magnitude", "4:8"),
            ("magnitude", "60%"), ("wanda", "60%"), ("sparsegpt", "60%"),
            ("sparsegpt-dt512", "70%"), ("sparsegpt-dt512", "80%"), ("sparsegpt-dt512", "2:4"),
            ("sparsegpt-dt512", "50%"), ("sparsegpt-dt512", "60%"), ("sparsegpt-dt512", "4:8")]
#: The issue's targets (STS-B test Spearman x100; dense 82.03).
TARGETS = {"70% best of wanda/sparsegpt": 80.0, "80% best of wanda/sparsegpt": 76.0, "2:4 best": 81.5,
           "heads+ffn 1.5x": 81.8, "heads+ffn 2x": 80.5}
LATENCY_TARGETS = {1.5: 1.3, 2.0: 1.7}


def target_of(label: str):
    from metaprune.prune.layerwise import SparsityTarget

    if ":" in label:
        n, m = label.split(":")
        return SparsityTarget(n_m=(int(n), int(m)))
    return SparsityTarget(sparsity=int(label.rstrip("%")) / 100)


def latency_ms(model: torch.nn.Module, threads: int) -> dict[str, float]:
    """Median latency at batch 1 and 32, sequence 128 (PyTorch eager, ``threads`` threads)."""
    from metaprune.flops import measure_latency

    ids = torch.full((32, 128), 1000, dtype=torch.long)
    return {"batch1_ms": measure_latency(model, ids[:1], repeats=20, warmup=3, threads=threads).median_ms,
            "batch32_ms": measure_latency(model, ids, repeats=5, warmup=1, threads=threads).median_ms}


def run_masks(args: argparse.Namespace) -> None:
    """Every (method, target) pair of :data:`PRIORITY` not yet in the results (``--resume``): prune a fresh copy
    of MiniLM, score STS-B test (and dev, for the variants chosen on dev), record time and load average."""
    import os
    import random

    from metaprune.data.stsb import load_stsb, sts_spearman
    from metaprune.models.minilm import load_minilm
    from metaprune.prune import sparsegpt, wanda  # noqa: F401  (registers the methods)
    from metaprune.prune.layerwise import LayerwiseOptions, prune_blocks, reached_sparsity
    from metaprune.workflows.text import tokenized_batches

    splits = load_stsb(args.data_root)
    base = load_minilm()
    pool = splits.train.sentences()
    random.Random(0).shuffle(pool)
    results: dict[str, Any] = {"calibration_sentences": args.calibration, "rows": []}
    previous = RESULTS / "minilm_stsb_masks.json"
    if args.resume and previous.is_file():  # keep the rows of an interrupted run
        results = {key: value for key, value in json.loads(previous.read_text()).items() if key != "machine"}
    if "dense_test" not in results:
        results["dense_test"] = sts_spearman(base.encode, splits.test)
    results["variants"] = {label: {"criterion": criterion, "options": options, "calibration_sentences": size}
                           for label, (criterion, options, size) in MASK_VARIANTS.items()}
    print(f"dense test {results['dense_test']:.2f}", flush=True)
    done = {(row["method"], row["target"]) for row in results["rows"]}
    for method, label in PRIORITY:  # the pairs the targets name first
        if (method, label) in done:
            continue
        criterion, options, size = MASK_VARIANTS.get(method, (method, {}, None))
        sentences = pool[:size or args.calibration]
        encoder = copy.copy(base)
        encoder.model = copy.deepcopy(base.model)
        load = [round(value, 2) for value in os.getloadavg()]
        start = time.perf_counter()
        reports = prune_blocks(encoder.model, encoder.model.encoder.layer, tokenized_batches(encoder, sentences),
                               criterion, target_of(label), options=LayerwiseOptions(**options))
        seconds = time.perf_counter() - start
        score = sts_spearman(encoder.encode, splits.test)
        errors = [r.relative_error for r in reports if r.relative_error is not None]
        row = {"method": method, "target": label, "test_spearman": score, "prune_seconds": seconds,
               "load_average": load, "calibration_sentences": len(sentences),
               "reached_sparsity": reached_sparsity(reports),
               "mean_relative_error": sum(errors) / len(errors) if errors else None}
        if method in MASK_VARIANTS:
            row["dev_spearman"] = sts_spearman(encoder.encode, splits.dev)
        results["rows"].append(row)
        print(f"{method:15s} {label:4s} test {score:.2f}  {seconds:.1f}s  load {load}", flush=True)
        write_json("minilm_stsb_masks", results)


def run_structured(args: argparse.Namespace) -> None:
    """Heads + FFN at 2x and 1.5x: fisher-mask, which then distils (``--distill-epochs``, one run gives the
    retraining-free row and the distilled one), and magnitude (uniform), unless reused (``--reuse``)."""
    from metaprune.prune.budget import Budget
    from metaprune.prune.report import ModelFigures
    from metaprune.workflows.text import TextPruneOptions, run_text_prune

    reused = _reused(args)
    results: dict[str, Any] = {"rows": list(reused.get("rows", [])), "work_threads": args.work_threads,
                               "load_average_start": load_average(), "distill_sentences": args.distill_sentences}
    dense_measures = None
    if "dense" in reused:
        dense = results["dense"] = reused["dense"]
        dense_measures = (ModelFigures(flops=dense["flops"], params=dense["params"], nonzero_params=dense["params"]),
                          {"dev_spearman": dense["dev_spearman"], "test_spearman": dense["test_spearman"]})
    for speedup in sorted(args.speedups or SPEEDUPS, reverse=True):  # 2x first: most of the targets
        for criterion in ("fisher-mask", "magnitude"):
            if criterion in (args.reuse or []):
                continue
            distill = args.distill_epochs if criterion == "fisher-mask" else 0
            options = TextPruneOptions(data_root=str(args.data_root), budget=Budget.from_speedup(speedup),
                                       pattern="head-ffn", criterion=criterion, latency=False,
                                       calibration_size=args.calibration, distill_epochs=distill,
                                       distill_sentences=args.distill_sentences)
            load_before = load_average()
            result = run_text_prune(options, dense_measures)
            report = result.report
            dense_measures = (report.dense, report.extra["dense"])
            extra = report.extra
            before = extra["distill"]["before"] if distill else extra["pruned"]
            row = {"criterion": criterion, "speedup_asked": speedup, "distilled": False,
                   "flops_speedup": report.speedup["flops"], "test_spearman": before["test_spearman"],
                   "dev_spearman": before["dev_spearman"], "prune_seconds": extra["prune_time_s"],
                   "prune_cpu_seconds": extra.get("prune_cpu_s"), "stage_seconds": extra.get("stage_seconds"),
                   "load_average": [load_before, load_average()],
                   "params": report.pruned.params, "heads_per_layer": extra["heads_per_layer"],
                   "neurons_per_layer": extra["neurons_per_layer"],
                   "dev_spearman_by_stage": extra.get("dev_spearman_by_stage"),
                   "selection_pairs": extra.get("selection_pairs"), "tuned": extra.get("tuned")}
            if "dense" not in results:
                results["dense"] = {"test_spearman": extra["dense"]["test_spearman"],
                                    "dev_spearman": extra["dense"]["dev_spearman"],
                                    "flops": report.dense.flops, "params": report.dense.params}
            results["rows"].append(row)
            print(f"{criterion:11s} {speedup}x test {row['test_spearman']:.2f} dev {row['dev_spearman']:.2f} "
                  f"{row['prune_seconds']:.1f}s stages {row['stage_seconds']} load {row['load_average']}", flush=True)
            if distill:
                info = extra["distill"]
                results["rows"].append({**row, "distilled": True, "test_spearman": extra["pruned"]["test_spearman"],
                                        "dev_spearman": extra["pruned"]["dev_spearman"], "distill": info})
                print(f"  + distillation: test {extra['pruned']['test_spearman']:.2f} dev by epoch "
                      f"{info['epoch_dev_spearman']} kept epoch {info['best_epoch']} {info['seconds']:.0f}s", flush=True)
            write_json("minilm_stsb_structured", results)


def _reused(args: argparse.Namespace) -> dict[str, Any]:
    """Rows of an earlier structured run to keep (``--reuse``: magnitude rows are deterministic and cheap to
    trust, and the dense figures do not change; with ``--speedups``, the rows of the other speed-ups; the
    ``--part variants`` rows), so that
    a busy machine spends its time on the new rows."""
    path = RESULTS / "minilm_stsb_structured.json"
    if not (args.reuse or args.speedups) or not path.is_file():
        return {}
    previous = json.loads(path.read_text())
    keep = [row for row in previous["rows"] if row.get("variant") or row["criterion"] in args.reuse
            or (args.speedups and row["speedup_asked"] not in args.speedups)]
    return {"dense": previous["dense"], "rows": [dict(row, reused=True) for row in keep]}


#: Latency-aware variants of fisher-mask at 2x (``--part variants``): what each gives in measured speed-up.
VARIANTS = {"round64": {"round_to": 64}, "time-aware": {"latency_speedup": 2.0, "round_to": 64}}


def run_variants(args: argparse.Namespace) -> None:
    """fisher-mask at 2x fewer FLOPs with FFN sizes rounded to multiples of 64 and with the measured-time
    constraint of the search; rows appended to ``minilm_stsb_structured.json`` (marked by ``variant``)."""
    from metaprune.prune.budget import Budget
    from metaprune.workflows.text import TextPruneOptions, run_text_prune

    path = RESULTS / "minilm_stsb_structured.json"
    results = {key: value for key, value in json.loads(path.read_text()).items() if key != "machine"}
    dense = results["dense"]
    dense_measures = None
    for variant in args.variants:
        options = TextPruneOptions(data_root=str(args.data_root), budget=Budget.from_speedup(2.0), pattern="head-ffn",
                                   criterion="fisher-mask", latency=False, calibration_size=args.calibration,
                                   **VARIANTS[variant])
        load_before = load_average()
        if dense_measures is None:
            from metaprune.prune.report import ModelFigures

            dense_measures = (ModelFigures(flops=dense["flops"], params=dense["params"], nonzero_params=dense["params"]),
                              {"dev_spearman": dense["dev_spearman"], "test_spearman": dense["test_spearman"]})
        report = run_text_prune(options, dense_measures).report
        extra = report.extra
        row = {"criterion": "fisher-mask", "speedup_asked": 2.0, "variant": variant, "options": VARIANTS[variant],
               "distilled": False, "flops_speedup": report.speedup["flops"],
               "test_spearman": extra["pruned"]["test_spearman"], "dev_spearman": extra["pruned"]["dev_spearman"],
               "prune_seconds": extra["prune_time_s"], "prune_cpu_seconds": extra.get("prune_cpu_s"),
               "stage_seconds": extra.get("stage_seconds"),
               "load_average": [load_before, load_average()], "params": report.pruned.params,
               "heads_per_layer": extra["heads_per_layer"], "neurons_per_layer": extra["neurons_per_layer"],
               "dev_spearman_by_stage": extra.get("dev_spearman_by_stage"), "tuned": extra.get("tuned"),
               "unit_times": extra.get("unit_times"), "predicted_time_speedup": extra.get("predicted_time_speedup")}
        results["rows"] = [r for r in results["rows"] if r.get("variant") != variant] + [row]
        print(f"{variant}: test {row['test_spearman']:.2f} dev {row['dev_spearman']:.2f} heads {row['heads_per_layer']} "
              f"neurons {row['neurons_per_layer']} {row['prune_seconds']:.0f}s", flush=True)
        write_json("minilm_stsb_structured", results)


def structured_shapes(heads: list[int], neurons: list[int]) -> Any:
    """MiniLM with ``heads[i]`` heads and ``neurons[i]`` FFN neurons in layer ``i`` (latency depends on shapes only)."""
    from metaprune.models.minilm import load_minilm
    from metaprune.prune.head_ffn import StructureMasks, encoder_layers
    from metaprune.prune.head_ffn_tuning import remove_structure

    encoder = load_minilm()
    layers = encoder_layers(encoder.model)
    masks = StructureMasks([(torch.arange(p.heads) < k).float() for p, k in zip(layers, heads)],
                           [(torch.arange(p.intermediate.out_features) < k).float() for p, k in zip(layers, neurons)])
    remove_structure(encoder.model, masks)
    return encoder


def load_average() -> list[float]:
    import os

    return [round(value, 2) for value in os.getloadavg()]


def interleaved_latency(encoders: dict[str, Any], threads: int, rounds: int, batch1_calls: int = 5
                        ) -> dict[str, dict[str, float]]:
    """Median wall latency (ms) of every encoder at batch 1 and 32, sequence 128, in PyTorch eager and ONNX
    Runtime, ``threads`` threads each, and (``eager_cpu1``) the CPU time of eager batch 32 on one thread, which
    a busy machine disturbs least. The models take turns inside every round (so a load change hits all alike);
    a batch-1 sample is the mean of ``batch1_calls`` calls; the figure is the median over ``rounds``."""
    import statistics

    from metaprune.export import onnx_session, session_feed, to_onnx_bytes
    from metaprune.models.minilm import ExportableEncoder

    calls: dict[tuple[str, str, int], Any] = {}
    for name, encoder in encoders.items():
        wrapper = ExportableEncoder(encoder).eval()
        for batch in (1, 32):
            example = wrapper.example_inputs(batch, 128)
            example["attention_mask"] = torch.ones_like(example["attention_mask"])  # 128 real tokens

            def eager(wrapper=wrapper, example=example) -> object:
                with torch.inference_mode():
                    return wrapper(**example)

            calls[(name, "eager", batch)] = eager
            if batch == 32:  # the steady figure on a shared machine: CPU time of one thread
                calls[(name, "eager_cpu1", batch)] = eager
            session = onnx_session(to_onnx_bytes(wrapper, example)[0], threads)
            feed = session_feed(session, example)
            calls[(name, "onnxruntime", batch)] = lambda session=session, feed=feed: session.run(None, feed)
    samples: dict[tuple[str, str, int], list[float]] = {key: [] for key in calls}
    torch.set_num_threads(threads)
    try:
        for function in calls.values():  # warm-up
            function()
        for round_index in range(rounds):
            for key, function in calls.items():
                repeat = batch1_calls if key[2] == 1 else 1
                steady = key[1] == "eager_cpu1"
                torch.set_num_threads(1 if steady else threads)
                clock = time.process_time if steady else time.perf_counter
                start = clock()
                for _ in range(repeat):
                    function()
                samples[key].append((clock() - start) * 1e3 / repeat)
            print(f"latency round {round_index + 1}/{rounds}, load {load_average()}", flush=True)
    finally:
        torch.set_num_threads(1)
    results: dict[str, dict[str, float]] = {name: {} for name in encoders}
    for (name, runtime, batch), values in samples.items():
        results[name][f"{runtime}_batch{batch}_ms"] = statistics.median(values)
        results[name][f"{runtime}_batch{batch}_min_ms"] = min(values)
    return results


def run_latency(args: argparse.Namespace) -> None:
    """Latency of the dense encoder and of encoders with the structured rows' shapes (latency depends on
    shapes only), all in one process, interleaved, with ``--threads`` threads, in eager and ONNX Runtime."""
    from metaprune.models.minilm import load_minilm

    structured = json.loads((RESULTS / "minilm_stsb_structured.json").read_text())
    encoders = {"dense": load_minilm()}
    labels = {}
    for row in structured["rows"]:
        label = f"{row['criterion']} {row['speedup_asked']}x" + (f" {row['variant']}" if row.get("variant") else "")
        if label in labels.values():
            continue
        labels[label] = label
        encoders[label] = structured_shapes(row["heads_per_layer"], row["neurons_per_layer"])
    load_before = load_average()
    start = time.perf_counter()
    timings = interleaved_latency(encoders, args.threads, args.latency_rounds)
    results: dict[str, Any] = {"threads": args.threads, "sequence_length": 128, "rounds": args.latency_rounds,
                               "statistic": "median wall time over interleaved rounds (batch 1: mean of 5 calls)",
                               "load_average_before": load_before, "load_average_after": load_average(),
                               "seconds": time.perf_counter() - start, "dense": timings.pop("dense"), "rows": []}
    for row in structured["rows"]:
        label = f"{row['criterion']} {row['speedup_asked']}x" + (f" {row['variant']}" if row.get("variant") else "")
        results["rows"].append({"criterion": row["criterion"], "speedup_asked": row["speedup_asked"],
                                "variant": row.get("variant"), "label": label, **timings[label]})
    for label, timing in [("dense", results["dense"])] + [(r["label"], r) for r in results["rows"]]:
        print(f"{label:24s} " + " ".join(f"{key.removesuffix('_ms')} {timing[key]:.1f}" for key in
                                         ("eager_batch1_ms", "eager_batch32_ms", "onnxruntime_batch1_ms",
                                          "onnxruntime_batch32_ms", "eager_cpu1_batch32_ms")), flush=True)
    write_json("minilm_stsb_latency", results)


def _met(value: float | None, goal: float) -> str:
    return "-" if value is None else ("met" if value >= goal else "missed")


def row_label(row: dict[str, Any]) -> str:
    """``criterion speedup [variant]``: the key shared by a structured row and its latency row."""
    return f"{row['criterion']} {row['speedup_asked']}x" + (f" {row['variant']}" if row.get("variant") else "")


def structured_section(structured: dict[str, Any], latency: dict[str, Any] | None) -> tuple[list[str], list[list[str]]]:
    """The heads + FFN table (Spearman, prune time, eager and ONNX Runtime latency and speed-ups) and its target rows."""
    dense = structured["dense"]
    timings = {row["label"]: row for row in latency["rows"]} if latency else {}
    dense_time = latency["dense"] if latency else None

    def cells(timing: dict[str, float] | None) -> list[str]:
        if timing is None or dense_time is None:
            return ["-"] * 7
        return [f"{timing[f'{r}_batch{b}_ms']:.0f}" for r in ("eager", "onnxruntime") for b in (1, 32)] + \
               [f"{dense_time[f'{r}_batch32_ms'] / timing[f'{r}_batch32_ms']:.2f}x"
                if f"{r}_batch32_ms" in timing else "-" for r in ("eager", "onnxruntime", "eager_cpu1")]

    def order(row: dict[str, Any]) -> tuple:
        return (row["speedup_asked"], row.get("variant") or "", row["criterion"] != "magnitude", row.get("distilled", False))

    table = [["dense", "1.00x", f"{dense['test_spearman']:.2f}", f"{dense['dev_spearman']:.2f}",
              f"{dense['params'] / 1e6:.2f}M", "-", *cells(dense_time)]]
    for row in sorted(structured["rows"], key=order):
        name = row["criterion"] + (f" ({row['variant']})" if row.get("variant") else "")
        if row.get("distilled"):
            info = row["distill"]
            name += f" + distillation ({info['sentences']} sentences, {info['seconds']:.0f}s, epoch {info['best_epoch']} kept)"
        table.append([name, f"{row['flops_speedup']:.2f}x", f"{row['test_spearman']:.2f}", f"{row['dev_spearman']:.2f}",
                      f"{row['params'] / 1e6:.2f}M", f"{row['prune_seconds']:.0f}s", *cells(timings.get(row_label(row)))])
    header = ["method", "FLOPs speed-up", "test Spearman", "dev Spearman", "params", "prune time", "eager b1 ms",
              "eager b32 ms", "ORT b1 ms", "ORT b32 ms", "speed-up eager b32", "speed-up ORT b32",
              "speed-up eager b32 (1-thread CPU time)"]
    lines = [markdown_table(header, table), ""]
    if latency:
        lines.append(f"Latency: CPU, sequence 128, {latency['threads']} threads, median of {latency['rounds']} "
                     f"interleaved rounds (dense and every pruned shape in turn, one process); load average "
                     f"{latency['load_average_before']} before, {latency['load_average_after']} after. Latency "
                     "depends on shapes only: a distilled model times as its undistilled row. The last column is "
                     "the CPU time of one eager thread at batch 32, the figure a busy machine disturbs least.\n")
    plain = {(r["speedup_asked"]): r for r in structured["rows"]
             if r["criterion"] == "fisher-mask" and not r.get("variant") and not r.get("distilled")}
    distilled = {(r["speedup_asked"]): r for r in structured["rows"] if r.get("distilled")}
    checks = [("heads+FFN 1.5x, retraining-free >= 81.8", plain.get(1.5, {}).get("test_spearman"), 81.8),
              ("heads+FFN 2x, retraining-free >= 80.5", plain.get(2.0, {}).get("test_spearman"), 80.5),
              ("heads+FFN 2x with distillation >= 81.5", distilled.get(2.0, {}).get("test_spearman"), 81.5)]
    rows = [[name, "-" if value is None else f"{value:.2f}", _met(value, goal)] for name, value, goal in checks]
    for speedup, goal in LATENCY_TARGETS.items():
        row = plain.get(speedup)
        timing = timings.get(row_label(row)) if row else None
        if timing and dense_time:
            for runtime in ("eager", "onnxruntime"):
                measured = dense_time[f"{runtime}_batch32_ms"] / timing[f"{runtime}_batch32_ms"]
                rows.append([f"latency speed-up at {speedup}x FLOPs >= {goal} (batch 32, {runtime})",
                             f"{measured:.2f}x", "met" if measured >= goal else "missed"])
    for row in structured["rows"]:
        timing = timings.get(row_label(row))
        if row.get("variant") and timing and dense_time:
            speedups = [dense_time[f"{r}_batch32_ms"] / timing[f"{r}_batch32_ms"] for r in ("eager", "onnxruntime")]
            rows.append([f"variant {row['variant']} at 2x FLOPs: test >= 80.5, latency >= 1.7 (eager / ORT)",
                         f"{row['test_spearman']:.2f}, {speedups[0]:.2f}x / {speedups[1]:.2f}x",
                         "met" if row["test_spearman"] >= 80.5 and max(speedups) >= 1.7 else "missed"])
    return lines, rows


def run_report(args: argparse.Namespace) -> None:
    masks = json.loads((RESULTS / "minilm_stsb_masks.json").read_text())
    structured = json.loads((RESULTS / "minilm_stsb_structured.json").read_text())
    latency_file = RESULTS / "minilm_stsb_latency.json"
    latency = json.loads(latency_file.read_text()) if latency_file.is_file() else None
    lines = ["# MiniLM-L6 on STS-B: retraining-free pruning\n",
             f"STS-B test Spearman x100 (cosine of mean-pooled, normalised embeddings); dense = "
             f"{masks['dense_test']:.2f}. Calibration: {masks['calibration_sentences']} STS-B train sentences; "
             f"pruning times on this machine (1 thread, shared CPU).\n", "## Masks (every Linear of the encoder)\n"]
    scores = {(row["method"], row["target"]): row for row in masks["rows"]}
    header = ["method", *MASK_TARGETS]
    table = []
    for method in MASK_METHODS:
        cells = [method]
        for label in MASK_TARGETS:
            row = scores.get((method, label))
            cells.append("-" if row is None else f"{row['test_spearman']:.2f} ({row['prune_seconds']:.0f}s)")
        table.append(cells)
    lines += [markdown_table(header, table), ""]
    lines.append("## Heads + FFN neurons (structured, physically removed)\n")
    structured_lines, structured_rows = structured_section(structured, latency)
    lines += structured_lines
    best = {label: max((scores[(m, label)]["test_spearman"] for m in MASK_METHODS
                        if m.startswith(("wanda", "sparsegpt")) and (m, label) in scores), default=None)
            for label in MASK_TARGETS}
    checks = [
        ("70% unstructured, best of Wanda/SparseGPT >= 80.0", best["70%"], 80.0),
        ("80% unstructured, best of Wanda/SparseGPT >= 76.0", best["80%"], 76.0),
        ("2:4 >= 81.5", best["2:4"], 81.5),
    ]
    rows = [[name, "-" if value is None else f"{value:.2f}", _met(value, goal)] for name, value, goal in checks]
    for label in ("2:4", "70%", "80%"):  # the best row of each family (a variant counts for its method)
        s, w = (max((row for (m, t), row in scores.items() if m.startswith(family) and t == label),
                    key=lambda row: row["test_spearman"], default=None) for family in ("sparsegpt", "wanda"))
        if s and w:
            rows.append([f"SparseGPT ahead of Wanda at {label}",
                         f"{s['test_spearman']:.2f} vs {w['test_spearman']:.2f}",
                         "met" if s["test_spearman"] > w["test_spearman"] else "missed"])
    rows += structured_rows
    over = [f"{r.get('method', r.get('criterion'))} {r.get('target', r.get('speedup_asked'))}"
            + (f" {r['variant']}" if r.get("variant") else "")
            for r in masks["rows"] + structured["rows"] if r["prune_seconds"] > 300 and not r.get("distilled")]
    rows.append(["every pruning time < 5 min", ", ".join(over) or "all", "missed" if over else "met"])
    lines += ["## Targets of issue 17\n", markdown_table(["target", "measured", ""], rows), ""]
    (RESULTS / "minilm_stsb.md").write_text("\n".join(lines))
    write_json("minilm_stsb", {"masks": masks, "structured": structured, "latency": latency,
                                "targets": [dict(zip(("target", "measured", "status"), row)) for row in rows]})
    plot(masks, structured)
    print("\n".join(lines))


def plot(masks: dict[str, Any], structured: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for method in MASK_METHODS:
        rows = sorted((r for r in masks["rows"] if r["method"] == method and r["target"].endswith("%")),
                      key=lambda r: int(r["target"].rstrip("%")))
        line, = left.plot([int(r["target"].rstrip("%")) for r in rows], [r["test_spearman"] for r in rows], "o-",
                          label=method)
        for r in masks["rows"]:
            if r["method"] == method and ":" in r["target"]:
                left.scatter([50], [r["test_spearman"]], marker="s" if r["target"] == "2:4" else "^",
                             color=line.get_color())
    left.axhline(masks["dense_test"], color="grey", linestyle="--", label="dense")
    left.set(xlabel="sparsity % (squares 2:4, triangles 4:8 at 50 %)", ylabel="STS-B test Spearman x100",
             title="masks, no retraining")
    left.legend()
    for criterion in ("magnitude", "fisher-mask"):
        rows = sorted((r for r in structured["rows"] if r["criterion"] == criterion and not r.get("variant")
                       and not r.get("distilled")), key=lambda r: r["flops_speedup"])
        right.plot([r["flops_speedup"] for r in rows], [r["test_spearman"] for r in rows], "o-", label=criterion)
    distilled = sorted((r for r in structured["rows"] if r.get("distilled")), key=lambda r: r["flops_speedup"])
    if distilled:
        right.plot([r["flops_speedup"] for r in distilled], [r["test_spearman"] for r in distilled], "s--",
                   label="fisher-mask + distillation")
    for r in structured["rows"]:
        if r.get("variant"):
            right.scatter([r["flops_speedup"]], [r["test_spearman"]], marker="^", label=f"fisher-mask ({r['variant']})")
    right.axhline(structured["dense"]["test_spearman"], color="grey", linestyle="--", label="dense")
    right.set(xlabel="FLOPs speed-up", ylabel="STS-B test Spearman x100", title="heads + FFN neurons removed")
    right.legend()
    figure.tight_layout()
    figure.savefig(RESULTS / "minilm_stsb.png", dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("masks", "structured", "variants", "latency", "report", "all"),
                        default="all")
    parser.add_argument("--variants", nargs="+", choices=tuple(VARIANTS), default=list(VARIANTS),
                        help="variants: which latency-aware variants of fisher-mask 2x to run")
    parser.add_argument("--data-root", type=Path, default=DEFAULT_ROOT)
    parser.add_argument("--calibration", type=int, default=256, help="calibration sentences (and Fisher pairs)")
    parser.add_argument("--threads", type=int, default=2, help="threads of the latency measurements")
    parser.add_argument("--work-threads", type=int, default=1, help="threads of pruning and evaluation")
    parser.add_argument("--distill-epochs", type=int, default=1, help="structured: distillation epochs after fisher-mask")
    parser.add_argument("--distill-sentences", type=int, default=4000,
                        help="structured: STS-B train sentences distilled on (a seeded sample)")
    parser.add_argument("--reuse", nargs="*", default=[], choices=("magnitude", "fisher-mask"),
                        help="structured: keep these criteria's rows (and the dense figures) from the last results")
    parser.add_argument("--speedups", nargs="+", type=float, default=None,
                        help="structured: only these FLOPs speed-ups (the other rows are kept from the last results)")
    parser.add_argument("--latency-rounds", type=int, default=9, help="interleaved latency rounds (median taken)")
    parser.add_argument("--resume", action="store_true", help="masks: keep the rows already in the results")
    args = parser.parse_args()
    torch.set_num_threads(args.work_threads)
    parts = ("masks", "structured", "variants", "latency", "report") if args.part == "all" else (args.part,)
    for part in parts:
        {"masks": run_masks, "structured": run_structured, "variants": run_variants, "latency": run_latency,
         "report": run_report}[part](args)


if __name__ == "__main__":
    main()
