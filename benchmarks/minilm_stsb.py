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
MASK_METHODS = ("magnitude", "wanda", "sparsegpt")
SPEEDUPS = (1.5, 2.0)
#: Order of the mask runs: the issue's targets (70 %, 80 %, 2:4; SparseGPT vs Wanda) first, then the rest.
PRIORITY = [("sparsegpt", "70%"), ("wanda", "70%"), ("sparsegpt", "2:4"), ("wanda", "2:4"), ("sparsegpt", "80%"),
            ("wanda", "80%"), ("magnitude", "50%"), ("magnitude", "70%"), ("magnitude", "2:4"), ("wanda", "50%"),
            ("sparsegpt", "50%"), ("wanda", "4:8"), ("sparsegpt", "4:8"), ("magnitude", "4:8"),
            ("magnitude", "60%"), ("wanda", "60%"), ("sparsegpt", "60%")]
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
    from metaprune.data.stsb import load_stsb, sts_spearman
    from metaprune.models.minilm import load_minilm
    from metaprune.prune import sparsegpt, wanda  # noqa: F401  (registers the methods)
    from metaprune.prune.layerwise import prune_blocks
    from metaprune.workflows.text import tokenized_batches

    splits = load_stsb(args.data_root)
    base = load_minilm()
    sentences = splits.train.sentences()
    import random

    random.Random(0).shuffle(sentences)
    sentences = sentences[:args.calibration]
    results: dict[str, Any] = {"calibration_sentences": len(sentences), "rows": []}
    previous = RESULTS / "minilm_stsb_masks.json"
    if args.resume and previous.is_file():  # keep the rows of an interrupted run
        results = {key: value for key, value in json.loads(previous.read_text()).items() if key != "machine"}
    if "dense_test" not in results:
        results["dense_test"] = sts_spearman(base.encode, splits.test)
    print(f"dense test {results['dense_test']:.2f}", flush=True)
    done = {(row["method"], row["target"]) for row in results["rows"]}
    for method, label in PRIORITY:  # the pairs the targets name first
        if (method, label) in done:
            continue
        encoder = copy.copy(base)
        encoder.model = copy.deepcopy(base.model)
        start = time.perf_counter()
        reports = prune_blocks(encoder.model, encoder.model.encoder.layer,
                               tokenized_batches(encoder, sentences), method, target_of(label))
        seconds = time.perf_counter() - start
        score = sts_spearman(encoder.encode, splits.test)
        errors = [r.relative_error for r in reports if r.relative_error is not None]
        row = {"method": method, "target": label, "test_spearman": score, "prune_seconds": seconds,
               "mean_relative_error": sum(errors) / len(errors) if errors else None}
        results["rows"].append(row)
        print(f"{method:10s} {label:4s} test {score:.2f}  {seconds:.1f}s", flush=True)
        write_json("minilm_stsb_masks", results)


def run_structured(args: argparse.Namespace) -> None:
    from metaprune.prune.budget import Budget
    from metaprune.workflows.text import TextPruneOptions, run_text_prune

    results: dict[str, Any] = {"rows": []}
    dense_measures = None
    for speedup in SPEEDUPS:
        for criterion in ("magnitude", "fisher-mask"):
            options = TextPruneOptions(data_root=str(args.data_root), budget=Budget.from_speedup(speedup),
                                       pattern="head-ffn", criterion=criterion, latency=False,
                                       calibration_size=args.calibration)
            result = run_text_prune(options, dense_measures)
            report = result.report
            dense_measures = (report.dense, report.extra["dense"])
            row = {"criterion": criterion, "speedup_asked": speedup, "flops_speedup": report.speedup["flops"],
                   "test_spearman": report.extra["pruned"]["test_spearman"],
                   "dev_spearman": report.extra["pruned"]["dev_spearman"],
                   "prune_seconds": report.extra["prune_time_s"], "params": report.pruned.params,
                   "heads_per_layer": report.extra["heads_per_layer"],
                   "neurons_per_layer": report.extra["neurons_per_layer"],
                   "dev_spearman_by_stage": report.extra.get("dev_spearman_by_stage"),
                   "tuned": report.extra.get("tuned"),
                   "latency": latency_ms(result.encoder.model, args.threads)}
            if "dense" not in results:
                results["dense"] = {"test_spearman": report.extra["dense"]["test_spearman"],
                                    "dev_spearman": report.extra["dense"]["dev_spearman"],
                                    "flops": report.dense.flops, "params": report.dense.params,
                                    "latency": latency_ms(result.dense.model, args.threads)}
            results["rows"].append(row)
            results["threads"] = args.threads
            print(f"{criterion:11s} {speedup}x test {row['test_spearman']:.2f} dev {row['dev_spearman']:.2f} "
                  f"{row['prune_seconds']:.1f}s latency {row['latency']}", flush=True)
            write_json("minilm_stsb_structured", results)


def run_latency(args: argparse.Namespace) -> None:
    """Latency of the dense encoder and of encoders with the structured rows' shapes (latency depends on
    shapes only), measured together in one process after the pruning runs, with ``--threads`` threads."""
    from metaprune.models.minilm import load_minilm
    from metaprune.prune.head_ffn import StructureMasks, encoder_layers
    from metaprune.prune.head_ffn_tuning import remove_structure

    structured = json.loads((RESULTS / "minilm_stsb_structured.json").read_text())
    results: dict[str, Any] = {"threads": args.threads, "dense": latency_ms(load_minilm().model, args.threads),
                               "rows": []}
    print(f"dense {results['dense']}", flush=True)
    for row in structured["rows"]:
        model = load_minilm().model
        layers = encoder_layers(model)
        masks = StructureMasks([(torch.arange(p.heads) < k).float() for p, k in zip(layers, row["heads_per_layer"])],
                               [(torch.arange(p.intermediate.out_features) < k).float()
                                for p, k in zip(layers, row["neurons_per_layer"])])
        remove_structure(model, masks)
        timing = latency_ms(model, args.threads)
        results["rows"].append({"criterion": row["criterion"], "speedup_asked": row["speedup_asked"], **timing})
        print(f"{row['criterion']} {row['speedup_asked']}x {timing}", flush=True)
        write_json("minilm_stsb_latency", results)


def _met(value: float | None, goal: float) -> str:
    return "-" if value is None else ("met" if value >= goal else "missed")


def run_report(args: argparse.Namespace) -> None:
    masks = json.loads((RESULTS / "minilm_stsb_masks.json").read_text())
    structured = json.loads((RESULTS / "minilm_stsb_structured.json").read_text())
    latency_file = RESULTS / "minilm_stsb_latency.json"
    if latency_file.is_file():  # measured apart from the pruning runs: use those figures
        latency = json.loads(latency_file.read_text())
        structured["dense"]["latency"] = latency["dense"]
        timings = {(r["criterion"], r["speedup_asked"]): r for r in latency["rows"]}
        for row in structured["rows"]:
            if (row["criterion"], row["speedup_asked"]) in timings:
                row["latency"] = timings[(row["criterion"], row["speedup_asked"])]
        structured["threads"] = latency["threads"]
    dense = structured["dense"]
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
    table = [["dense", "1.00x", f"{dense['test_spearman']:.2f}", f"{dense['params'] / 1e6:.2f}M", "-",
              f"{dense['latency']['batch1_ms']:.1f}", f"{dense['latency']['batch32_ms']:.0f}", "-", "-"]]
    for row in structured["rows"]:
        latency = row["latency"]
        table.append([row["criterion"], f"{row['flops_speedup']:.2f}x", f"{row['test_spearman']:.2f}",
                      f"{row['params'] / 1e6:.2f}M", f"{row['prune_seconds']:.0f}s", f"{latency['batch1_ms']:.1f}",
                      f"{latency['batch32_ms']:.0f}",
                      f"{dense['latency']['batch1_ms'] / latency['batch1_ms']:.2f}x",
                      f"{dense['latency']['batch32_ms'] / latency['batch32_ms']:.2f}x"])
    lines += [markdown_table(["method", "FLOPs speed-up", "test Spearman", "params", "prune time",
                              "batch 1 ms", "batch 32 ms", "speed-up b1", "speed-up b32"], table),
              f"\nLatency: PyTorch eager, CPU, sequence 128, {structured['threads']} threads.\n"]
    best = {label: max((scores[(m, label)]["test_spearman"] for m in ("wanda", "sparsegpt")
                        if (m, label) in scores), default=None) for label in MASK_TARGETS}
    fisher = {row["speedup_asked"]: row for row in structured["rows"] if row["criterion"] == "fisher-mask"}
    checks = [
        ("70% unstructured, best of Wanda/SparseGPT >= 80.0", best["70%"], 80.0),
        ("80% unstructured, best of Wanda/SparseGPT >= 76.0", best["80%"], 76.0),
        ("2:4 >= 81.5", best["2:4"], 81.5),
        ("heads+FFN 1.5x, retraining-free >= 81.8", fisher.get(1.5, {}).get("test_spearman"), 81.8),
        ("heads+FFN 2x, retraining-free >= 80.5", fisher.get(2.0, {}).get("test_spearman"), 80.5),
    ]
    rows = [[name, "-" if value is None else f"{value:.2f}", _met(value, goal)] for name, value, goal in checks]
    for label in ("2:4", "70%", "80%"):
        s, w = scores.get(("sparsegpt", label)), scores.get(("wanda", label))
        if s and w:
            rows.append([f"SparseGPT ahead of Wanda at {label}",
                         f"{s['test_spearman']:.2f} vs {w['test_spearman']:.2f}",
                         "met" if s["test_spearman"] > w["test_spearman"] else "missed"])
    for speedup, goal in LATENCY_TARGETS.items():
        row = fisher.get(speedup)
        if row:
            measured = dense["latency"]["batch32_ms"] / row["latency"]["batch32_ms"]
            rows.append([f"latency speed-up at {speedup}x FLOPs >= {goal} (batch 32)", f"{measured:.2f}x",
                         "met" if measured >= goal else "missed"])
    over = [f"{r.get('method', r.get('criterion'))} {r.get('target', r.get('speedup_asked'))}"
            for r in masks["rows"] + structured["rows"] if r["prune_seconds"] > 300]
    rows.append(["every pruning time < 5 min", ", ".join(over) or "all", "missed" if over else "met"])
    lines += ["## Targets of issue 17\n", markdown_table(["target", "measured", ""], rows), ""]
    (RESULTS / "minilm_stsb.md").write_text("\n".join(lines))
    write_json("minilm_stsb", {"masks": masks, "structured": structured,
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
        rows = [r for r in structured["rows"] if r["criterion"] == criterion]
        right.plot([r["flops_speedup"] for r in rows], [r["test_spearman"] for r in rows], "o-", label=criterion)
    right.axhline(structured["dense"]["test_spearman"], color="grey", linestyle="--", label="dense")
    right.set(xlabel="FLOPs speed-up", ylabel="STS-B test Spearman x100", title="heads + FFN neurons removed")
    right.legend()
    figure.tight_layout()
    figure.savefig(RESULTS / "minilm_stsb.png", dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("masks", "structured", "latency", "report", "all"), default="all")
    parser.add_argument("--data-root", type=Path, default=DEFAULT_ROOT)
    parser.add_argument("--calibration", type=int, default=256, help="calibration sentences (and Fisher pairs)")
    parser.add_argument("--threads", type=int, default=2, help="threads of the latency measurements")
    parser.add_argument("--work-threads", type=int, default=1, help="threads of pruning and evaluation")
    parser.add_argument("--resume", action="store_true", help="masks: keep the rows already in the results")
    args = parser.parse_args()
    torch.set_num_threads(args.work_threads)
    parts = ("masks", "structured", "latency", "report") if args.part == "all" else (args.part,)
    for part in parts:
        {"masks": run_masks, "structured": run_structured, "latency": run_latency, "report": run_report}[part](args)


if __name__ == "__main__":
    main()
