"""Benchmark: per-layer allocation methods on digits ResNet-20 at 4x and 8x FLOPs speed-up.

uniform, ERK, global magnitude, the rate-distortion DP, Optuna (TPE) and Ray Tune (Optuna +
ASHA) choose a plan from the same dense model; every plan then gets the same one-shot
pruning and the same fine-tune, over several seeds. Searchers score trials with the cheap
calibration ``distortion`` objective. Writes ``results/search.json`` and ``results/search.png``
and prints a Markdown table (test accuracy mean ± std, search wall time).

    python benchmarks/search.py            # 3 seeds, 50 trials per searcher
    python benchmarks/search.py --quick    # 1 seed, 20 trials
    python benchmarks/search.py --plot-only [--quick]   # redraw the PNG from the results JSON
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, dense_digits_model, markdown_table, mean_std, write_json  # noqa: E402

from metaprune.prune.budget import Budget  # noqa: E402
from metaprune.specs import TaskSpec, TrainingSpec  # noqa: E402
from metaprune.workflows.prune import PruneOptions, run_prune  # noqa: E402
from metaprune.workflows.search import SearchOptions, run_search  # noqa: E402

METHODS = ("uniform", "erk", "global_magnitude", "dp", "optuna", "ray")


def run(seeds: list[int], speedups: list[float], methods: list[str], trials: int, epochs: int, finetune_epochs: int,
        workers: int) -> list[dict]:
    """Search, prune and fine-tune every (seed, speed-up, method); one record each."""
    records = []
    for seed in seeds:
        dense, splits, _ = dense_digits_model("resnet20", seed, epochs)
        for speedup in speedups:
            budget = Budget.from_speedup(speedup)
            for method in methods:
                with tempfile.TemporaryDirectory() as run_dir:
                    options = SearchOptions(budget, method=method, task=TaskSpec(seed=seed), trials=trials,
                                            objective="distortion", out=run_dir, workers=workers, progress=False)
                    start = time.perf_counter()
                    result, _ = run_search(options, splits=splits, dense=dense)
                    search_seconds = time.perf_counter() - start
                prune = PruneOptions(budget, task=TaskSpec(seed=seed), training=TrainingSpec.dense(epochs),
                                     finetune=TrainingSpec.finetune(finetune_epochs), recipe=result.best_plan,
                                     latency=False)
                report = run_prune(prune, splits=splits, dense_model=dense, progress=False).report
                records.append({"seed": seed, "speedup": speedup, "method": method, "search_s": search_seconds,
                                "trials": len(result.trials), "best_score": result.best_score,
                                "flops_ratio": report.pruned.flops / report.dense.flops,
                                "test_accuracy": report.pruned.test_accuracy,
                                "val_accuracy": report.pruned.val_accuracy, "dense_test_accuracy": report.dense.test_accuracy})
                print(f"seed {seed} {speedup:g}x {method:17s} test {report.pruned.test_accuracy:.4f} "
                      f"FLOPs {records[-1]['flops_ratio']:.4f} search {search_seconds:.1f}s", flush=True)
    return records


def table(records: list[dict], speedups: list[float], methods: list[str]) -> str:
    """Markdown: test accuracy (mean ± std over seeds) and search time per method and speed-up."""
    header = ["method"] + [f"{s:g}x test acc (%)" for s in speedups] + [f"{s:g}x search (s)" for s in speedups]
    rows = []
    for method in methods:
        picked = {s: [r for r in records if r["method"] == method and r["speedup"] == s] for s in speedups}
        rows.append([method] + [mean_std(r["test_accuracy"] for r in picked[s]) for s in speedups]
                    + [f"{statistics.mean(r['search_s'] for r in picked[s]):.1f}" for s in speedups])
    return markdown_table(header, rows)


def plot(records: list[dict], speedups: list[float], methods: list[str], path: Path) -> None:
    """Bar chart of mean test accuracy (error bars: std over seeds) per method and speed-up."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(9, 4.5))
    width = 0.8 / len(speedups)
    for offset, speedup in enumerate(speedups):
        values = [[100 * r["test_accuracy"] for r in records if r["method"] == m and r["speedup"] == speedup]
                  for m in methods]
        means = [statistics.mean(v) for v in values]
        spreads = [statistics.stdev(v) if len(v) > 1 else 0.0 for v in values]
        axes.bar([i + offset * width for i in range(len(methods))], means, width, yerr=spreads, label=f"{speedup:g}x")
    seeds = len({r["seed"] for r in records})
    axes.set_xticks([i + width * (len(speedups) - 1) / 2 for i in range(len(methods))], methods, fontsize=10)
    axes.set_ylabel("test accuracy after fine-tune (%)", fontsize=11)
    axes.set_ylim(max(0.0, min(100 * r["test_accuracy"] for r in records) - 3), 100)  # accuracy ends at 100 %
    axes.set_title("digits ResNet-20: allocation methods at equal fine-tune "
                   + (f"(mean ± std, {seeds} seeds)" if seeds > 1 else "(1 seed)"), fontsize=11)
    axes.legend(title="FLOPs speed-up", loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=10, frameon=False)
    figure.tight_layout()
    figure.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 seed, 20 trials per searcher")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--speedups", type=float, nargs="+", default=[4.0, 8.0])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--epochs", type=int, default=10, help="dense training epochs")
    parser.add_argument("--finetune-epochs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2, help="concurrent Ray trials")
    parser.add_argument("--plot-only", action="store_true",
                        help="redraw the PNG and table from the results JSON without running anything")
    args = parser.parse_args()
    name = "search_quick" if args.quick else "search"
    if args.plot_only:
        saved = json.loads((RESULTS / f"{name}.json").read_text())["records"]
        speedups = sorted({r["speedup"] for r in saved})
        methods = [m for m in METHODS if any(r["method"] == m for r in saved)]
        plot(saved, speedups, methods, RESULTS / f"{name}.png")
        print(table(saved, speedups, methods))
        return
    seeds = list(range(1 if args.quick else args.seeds))
    trials = 20 if args.quick else args.trials
    records = run(seeds, args.speedups, args.methods, trials, args.epochs, args.finetune_epochs, args.workers)
    write_json(name, {"seeds": seeds, "trials": trials, "finetune_epochs": args.finetune_epochs,
                      "objective": "distortion", "records": records})
    plot(records, args.speedups, args.methods, RESULTS / f"{name}.png")
    print(table(records, args.speedups, args.methods))


if __name__ == "__main__":
    main()
