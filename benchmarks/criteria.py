"""Benchmark: every pruning criterion on digits ResNet-20 at 2x, 4x, 8x FLOPs speed-up.

Same dense models, same one-shot schedule and fine-tune budget for every criterion, several
seeds. Writes ``results/criteria.json`` and ``results/criteria.png`` and prints a Markdown
table (mean ± std of test accuracy before and after fine-tuning, and the measured CPU
latency speed-up beside the FLOPs speed-up).

    python benchmarks/criteria.py                 # 3 seeds, the README table
    python benchmarks/criteria.py --quick         # 1 seed, 2 criteria, a smoke run
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, dense_digits_model, markdown_table, mean_std, write_json  # noqa: E402

from metaprune.prune.budget import Budget  # noqa: E402
from metaprune.prune.criteria import standalone_criteria  # noqa: E402
from metaprune.prune.spec import PruningSpec  # noqa: E402
from metaprune.specs import TaskSpec, TrainingSpec  # noqa: E402
from metaprune.workflows.prune import PruneOptions, run_prune  # noqa: E402


def run(seeds: list[int], speedups: list[float], criteria: list[str], epochs: int, finetune_epochs: int,
        metanet: str | None = None, split_seed: int | None = None) -> dict:
    """Prune every (seed, speed-up, criterion) and collect the reports.

    ``metanet`` is the trained metanetwork used by the ``meta`` criterion; ``split_seed`` fixes
    the data split across seeds (default: the split follows the seed).
    """
    runs, dense_info = [], []
    for seed in seeds:
        dense, splits, seconds = dense_digits_model("resnet20", seed, epochs, split_seed=split_seed)
        for speedup in speedups:
            for criterion in criteria:
                options = PruneOptions(
                    Budget.from_speedup(speedup), task=TaskSpec(seed=seed), training=TrainingSpec.dense(epochs),
                    finetune=TrainingSpec.finetune(finetune_epochs),
                    pruning=PruningSpec(criterion=criterion,
                                        criterion_options={"metanet": metanet} if criterion == "meta" else {}))
                report = run_prune(options, splits=splits, dense_model=dense, progress=False).report
                runs.append({"seed": seed, "speedup": speedup, "criterion": criterion, "report": report.to_dict()})
                print(f"seed {seed} {speedup}x {criterion:9s} test {report.pruned.test_accuracy:.4f} "
                      f"flops {report.speedup['flops']:.2f}x latency {report.speedup['latency']:.2f}x", flush=True)
        dense_info.append({"seed": seed, "train_seconds": seconds, "test_accuracy": runs[-1]["report"]["dense"]["test_accuracy"]})
    return {"dense": dense_info, "runs": runs, "epochs": epochs, "finetune_epochs": finetune_epochs,
            "metanet": metanet, "split_seed": split_seed}


def table(result: dict, speedups: list[float], criteria: list[str]) -> str:
    """Markdown table: accuracy before/after fine-tune (mean ± std over seeds), FLOPs and latency speed-ups."""
    rows = []
    for speedup in speedups:
        for criterion in criteria:
            picked = [run["report"] for run in result["runs"] if run["speedup"] == speedup and run["criterion"] == criterion]
            before = [r["extra"]["before_finetune"]["test_accuracy"] for r in picked]
            after = [r["pruned"]["test_accuracy"] for r in picked]
            flops = statistics.mean(r["speedup"]["flops"] for r in picked)
            latency = statistics.mean(r["speedup"]["latency"] for r in picked)
            rows.append([f"{speedup:g}x", criterion, mean_std(before), mean_std(after), f"{flops:.2f}x", f"{latency:.2f}x"])
    return markdown_table(["target", "criterion", "test acc before FT (%)", "test acc after FT (%)",
                           "FLOPs speed-up", "CPU latency speed-up"], rows)


def plot(result: dict, speedups: list[float], criteria: list[str], path: Path) -> None:
    """Accuracy after fine-tune vs speed-up (mean ± std over seeds), one line per criterion, and latency vs FLOPs speed-up."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8))
    for index, criterion in enumerate(criteria):
        dodge = 2 ** (0.05 * (index - (len(criteria) - 1) / 2))  # side by side, so the error bars stay apart
        means, spreads = [], []
        for speedup in speedups:
            picked = [100 * r["report"]["pruned"]["test_accuracy"] for r in result["runs"]
                      if r["speedup"] == speedup and r["criterion"] == criterion]
            means.append(statistics.mean(picked))
            spreads.append(statistics.stdev(picked) if len(picked) > 1 else 0.0)
        left.errorbar([speedup * dodge for speedup in speedups], means, yerr=spreads, marker="o", capsize=3,
                      label=criterion)
    seeds = len({r["seed"] for r in result["runs"]})
    left.set_xscale("log", base=2)
    left.set_xticks(speedups, [f"{s:g}x" for s in speedups])
    left.minorticks_off()
    left.set_xlabel("FLOPs speed-up target", fontsize=11)
    left.set_ylabel("test accuracy after fine-tune (%)", fontsize=11)
    left.set_title(f"mean ± std over {seeds} seed{'s' * (seeds > 1)}", fontsize=11)
    left.legend(loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=3, fontsize=10, frameon=False)
    flops = [r["report"]["speedup"]["flops"] for r in result["runs"]]
    latency = [r["report"]["speedup"]["latency"] for r in result["runs"]]
    right.scatter(flops, latency, s=14, label="one run")
    right.plot([1, max(flops)], [1, max(flops)], "k--", linewidth=0.8, label="latency speed-up = FLOPs speed-up")
    right.set_xlabel("FLOPs speed-up (dense / pruned FLOPs)", fontsize=11)
    right.set_ylabel("CPU latency speed-up\n(batch 32, 1 thread)", fontsize=11)
    right.set_title("measured latency against FLOPs", fontsize=11)
    right.legend(loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=2, fontsize=10, frameon=False)
    for axes in (left, right):
        axes.tick_params(labelsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--speedups", type=float, nargs="+", default=[2, 4, 8])
    parser.add_argument("--criteria", nargs="+", default=list(standalone_criteria()))
    parser.add_argument("--epochs", type=int, default=12, help="dense training epochs")
    parser.add_argument("--finetune-epochs", type=int, default=4)
    parser.add_argument("--quick", action="store_true", help="1 seed, 2 criteria, 2x and 8x")
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.criteria, args.speedups = [0], ["group_l2", "random"], [2, 8]
    torch.set_num_threads(2)
    result = run(args.seeds, args.speedups, args.criteria, args.epochs, args.finetune_epochs)
    name = "criteria_quick" if args.quick else "criteria"
    print(f"wrote {write_json(name, result)}")
    plot(result, args.speedups, args.criteria, RESULTS / f"{name}.png")
    dense = result["dense"]
    print(f"dense ResNet-20: test accuracy {mean_std(d['test_accuracy'] for d in dense)} %, "
          f"trained in {statistics.mean(d['train_seconds'] for d in dense):.1f} s")
    print(table(result, args.speedups, args.criteria))


if __name__ == "__main__":
    main()
