"""Benchmark: accuracy at equal *measured* latency, CIFAR-10 ResNet-20 (issue 19).

From the committed dense CIFAR-10 checkpoint (``checkpoints/resnet20_cifar10_seed0``), for each
measured speed-up S (default 2x and 3x, batch 1, one thread) it builds

* ``flops``: the FLOPs-budget plan (group L2, global ranking, what ``metaprune prune --speedup`` does)
  whose FLOPs ratio is searched until its *measured* speed-up over dense is S (within ``--match``);
* latency-budget plans (what ``metaprune prune --latency-speedup S`` allocates, with the latency
  table's predicted latency as the cost): ``latency`` (group L2, global ranking), ``halp`` (HALP's
  knapsack: importance per predicted millisecond saved), and with ``--round-to 8`` variants
  ``latency_r8`` / ``halp_r8``. Each is first allocated open loop (predicted target = dense
  prediction / S, as the prune command does; its measured speed-up is recorded), then, if it measures
  outside ``--match`` of S, its predicted target is searched on the measured speed-up too, so every
  plan compared runs at the same measured latency (search: a sweep of knobs, a log-log fit, a
  verification; see :meth:`Bench.plan_at`);

then measures every plan of one target again in one interleaved session (dense and each plan in
turn, 5 rounds, medians: the figures reported), gives every plan the identical fine-tune of ``benchmarks/cifar10.py`` (its functions: BatchNorm
re-estimated, SGD Nesterov lr 0.01 cosine, weight decay 5e-4, batch 128, the same seeded subset and
batches per seed) and reports validation and test accuracy (nothing is selected: one fixed recipe),
measured and predicted latency, FLOPs. Latency: ``--statistic cpu`` (median CPU time per call, one
thread: the steady figure on a CPU shared with other jobs), dense and pruned measured interleaved,
median of 3. Two threads are not measured: on this shared 2-core machine the second core belongs to
other jobs and two-thread timings were off by 66-614% in the earlier run (``results/latency.md``).
Results are written after every run (``results/latency_accuracy.{json,md}``).

    OMP_NUM_THREADS=1 nice -n 5 python benchmarks/latency_accuracy.py --seeds 0 1     # the README table
    OMP_NUM_THREADS=1 python benchmarks/latency_accuracy.py --quick                    # smoke run, ~2 min
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cifar10 import FINETUNE_LR, accuracy, subset  # noqa: E402
from cifar10_dense import RECIPE, checkpoint_path  # noqa: E402
from cifar10_input import DEFAULT_ROOT  # noqa: E402
from common import machine, markdown_table, mean_std, write_result_files  # noqa: E402
from latency import measure_pair, predicted_ms, prune_copy  # noqa: E402

from metaprune.data import DataSplits, load_dataset, make_loaders  # noqa: E402
from metaprune.flops import count_flops  # noqa: E402
from metaprune.latency import LatencyCostModel, ProfileSettings, load_or_profile  # noqa: E402
from metaprune.latency.profile import batched  # noqa: E402
from metaprune.latency.timing import hardware_name, measure_ms  # noqa: E402
from metaprune.models import create_model  # noqa: E402
from metaprune.prune.groups import ModelGroups  # noqa: E402
from metaprune.train import evaluate, fit, load_state, recalibrate_batchnorm, seed_everything  # noqa: E402

#: variant -> (cost, ranking, round_to)
VARIANTS: dict[str, tuple[str, str, int]] = {
    "flops": ("flops", "global", 1),
    "latency": ("latency", "global", 1),
    "halp": ("latency", "knapsack", 1),
    "latency_r8": ("latency", "global", 8),
    "halp_r8": ("latency", "knapsack", 8),
}


def load() -> float:
    """The 1-minute load average."""
    return os.getloadavg()[0]


class Bench:
    """The dense model, its latency table and the measurement settings shared by every plan."""

    def __init__(self, dense: nn.Module, example: torch.Tensor, settings: ProfileSettings):
        self.dense, self.example, self.settings = dense, example, settings
        self.table, self.table_path, _ = load_or_profile(dense, example, settings)
        self.inputs = batched(example, settings.batch, settings.seed)
        predictor = LatencyCostModel(ModelGroups(dense, example), self.table)
        self.dense_predicted = predictor.latency_ms(predictor.sizes)
        self.dense_flops = count_flops(dense, example)
        self.dense_ms = statistics.median(measure_pair(dense, dense, self.inputs, settings))  # reported only
        self.scale = self.dense_ms / self.dense_predicted  # predictions are scaled to the measured dense model

    def factory(self, groups: ModelGroups) -> LatencyCostModel:
        return LatencyCostModel(groups, self.table)

    def build(self, variant: str, knob: float) -> nn.Module:
        """The plan of ``variant`` at ``knob``: a FLOPs ratio (flops) or a predicted latency in ms (latency plans)."""
        cost, ranking, round_to = VARIANTS[variant]
        if cost == "flops":
            return prune_copy(self.dense, self.example, knob * self.dense_flops, ranking=ranking, round_to=round_to)
        return prune_copy(self.dense, self.example, knob, self.factory, ranking=ranking, round_to=round_to)

    def speedup(self, model: nn.Module, runs: int = 3) -> tuple[float, float, float]:
        """(measured speed-up, dense ms, pruned ms): dense and pruned interleaved, the median of ``runs`` pairs."""
        pairs = [measure_pair(self.dense, model, self.inputs, self.settings) for _ in range(max(1, runs // 3))]
        dense_ms = statistics.median(pair[0] for pair in pairs)
        pruned_ms = statistics.median(pair[1] for pair in pairs)
        return dense_ms / pruned_ms, dense_ms, pruned_ms

    def final_measurement(self, models: list[nn.Module], rounds: int = 5) -> list[tuple[float, float]]:
        """(dense ms, pruned ms) of every model: dense and all of them measured in turn, ``rounds`` times; medians."""
        options = {"runtime": "torch", "threads": 1, "warmup": self.settings.warmup + 2,
                   "repeats": self.settings.repeats + 6, "statistic": self.settings.statistic}
        dense_runs: list[float] = []
        runs: list[list[float]] = [[] for _ in models]
        for _ in range(rounds):
            dense_runs.append(measure_ms(self.dense, self.inputs, **options))
            for index, model in enumerate(models):
                runs[index].append(measure_ms(model, self.inputs, **options))
        dense_ms = statistics.median(dense_runs)
        return [(dense_ms, statistics.median(values)) for values in runs]

    def smallest_knob(self, variant: str) -> float:
        """The narrowest plan's knob (every group at the 10% floor)."""
        if VARIANTS[variant][0] == "flops":
            return 0.02
        predictor = LatencyCostModel(ModelGroups(self.dense, self.example), self.table)
        floor = torch.tensor([float(max(1, math.ceil(0.1 * size))) for size in predictor.sizes.tolist()],
                             dtype=torch.float64)
        return predictor.latency_ms(floor) * 1.05

    def plan_at(self, variant: str, speedup: float, match: float, sweep: int) -> tuple[nn.Module, dict[str, Any]]:
        """The plan of ``variant`` measuring ``speedup`` (within ``match``).

        Open loop first (the knob ``metaprune prune`` would use: FLOPs ratio 1/S, or predicted latency
        dense/S). On a shared CPU one measurement is noisy (a few %, sometimes 10 %), so instead of a
        bisection that one outlier sends the wrong way, ``sweep`` knobs around the target are measured,
        log(speed-up) is fitted linearly in log(knob), and the knob where the fit meets S is built and
        measured twice as long; a miss is added to the fit and solved again (3 rounds at most)."""
        cost = VARIANTS[variant][0]
        open_knob = 1.0 / speedup if cost == "flops" else self.dense_predicted / speedup
        lowest = self.smallest_knob(variant)
        highest = 1.0 if cost == "flops" else self.dense_predicted
        points: list[dict[str, Any]] = []

        def try_knob(knob: float, runs: int = 3) -> tuple[nn.Module, dict[str, Any]]:
            model = self.build(variant, knob)
            measured, dense_ms, pruned_ms = self.speedup(model, runs)
            point = {"knob": knob, "measured_speedup": measured, "dense_ms": dense_ms, "measured_ms": pruned_ms}
            points.append(point)
            print(f"    {variant:10s} knob {knob:.4g} -> {measured:.3f}x (load {load():.1f})", flush=True)
            return model, point

        model, chosen = try_knob(open_knob)
        open_loop = chosen["measured_speedup"]
        if abs(open_loop / speedup - 1) > match:
            # a geometric sweep from the open-loop knob toward where the target lies
            guess = open_knob * (open_loop / speedup) ** (3.0 if cost == "flops" else 1.0)
            span = [guess * factor for factor in torch.logspace(-0.5, 0.5, sweep, base=2.0).tolist()]
            for knob in span:
                try_knob(min(highest, max(lowest, knob)))
            for _ in range(3):
                logs = torch.tensor([[math.log(point["knob"]), 1.0] for point in points], dtype=torch.float64)
                target = torch.tensor([math.log(point["measured_speedup"]) for point in points], dtype=torch.float64)
                slope, intercept = torch.linalg.lstsq(logs, target[:, None]).solution.flatten().tolist()
                knob = math.exp((math.log(speedup) - intercept) / slope) if slope < 0 else open_knob
                model, chosen = try_knob(min(highest, max(lowest, knob)), runs=6)
                if abs(chosen["measured_speedup"] / speedup - 1) <= match:
                    break
        predicted_ratio = predicted_ms(model, self.example, self.table, 1.0) / self.dense_predicted
        measured_ratio = chosen["measured_ms"] / chosen["dense_ms"]
        groups = ModelGroups(model, self.example)
        row = {"variant": variant, "speedup_target": speedup, "cost": cost, "ranking": VARIANTS[variant][1],
               "round_to": VARIANTS[variant][2], "knob": chosen["knob"], "open_loop_speedup": open_loop,
               "measurements": len(points), "points": points, "measured_speedup": chosen["measured_speedup"],
               "dense_ms": chosen["dense_ms"], "measured_ms": chosen["measured_ms"],
               # the table predicts ratios to dense: scaled by the dense latency measured beside this plan
               "predicted_ms": predicted_ratio * chosen["dense_ms"], "prediction_error": predicted_ratio / measured_ratio - 1,
               "flops_ratio": count_flops(model, self.example) / self.dense_flops,
               "params": sum(parameter.numel() for parameter in model.parameters()),
               "channels": {group.name: groups.current_size(group) for group in groups.groups}, "load": load()}
        return model, row


def finetune(model: nn.Module, splits: DataSplits, finetune_splits: DataSplits, epochs: int, seed: int
             ) -> dict[str, Any]:
    """``benchmarks/cifar10.py``'s treatment after pruning: BN re-estimated, the same fine-tune, val/test accuracy."""
    model = copy.deepcopy(model)
    loaders = make_loaders(splits, batch_size=RECIPE["batch_size"], seed=seed)
    finetune_loader = make_loaders(finetune_splits, batch_size=RECIPE["batch_size"], seed=seed)[0]
    start = time.perf_counter()
    recalibrate_batchnorm(model, loaders[0])
    before = evaluate(model, loaders[2])
    seed_everything(seed)
    fit(model, finetune_loader, epochs=epochs, lr=FINETUNE_LR, optimizer="sgd", weight_decay=RECIPE["weight_decay"],
        progress=False)
    return {"before_finetune_test": before, "after_finetune": accuracy(model, loaders),
            "finetune_seconds": time.perf_counter() - start}


def table(result: dict[str, Any]) -> str:
    """Markdown: one row per (target, variant), accuracy mean ± std over seeds."""
    rows = []
    groups: dict[tuple[float, str], list[dict[str, Any]]] = {}
    for run in result["runs"]:
        groups.setdefault((run["speedup_target"], run["variant"]), []).append(run)
    for (speedup, variant), runs in sorted(groups.items(), key=lambda item: (item[0][0], list(VARIANTS).index(item[0][1]))):
        plan = next(p for p in result["plans"] if p["speedup_target"] == speedup and p["variant"] == variant)
        rows.append([f"{speedup:g}x", variant, f"{plan['open_loop_speedup']:.2f}x" if plan["cost"] == "latency" else "-",
                     f"{plan['measured_speedup']:.2f}x", f"{plan['measured_ms']:.3f}", f"{plan['predicted_ms']:.3f}",
                     f"{plan['prediction_error']:+.1%}", f"{1 / plan['flops_ratio']:.2f}x",
                     mean_std(run["before_finetune_test"] for run in runs),
                     mean_std(run["after_finetune"]["val"] for run in runs),
                     mean_std(run["after_finetune"]["test"] for run in runs), str(len(runs))])
    dense = result["dense"]
    header = ["target", "plan", "open-loop speed-up", "measured speed-up", "measured ms", "predicted ms",
              "prediction error", "FLOPs speed-up", "test before FT (%)", "val after FT (%)", "test after FT (%)",
              "seeds"]
    return (f"Dense ResNet-20 ({result['dense_checkpoint']}, {result['dense_epochs']} epochs): val "
            f"{100 * dense['val']:.2f} %, test {100 * dense['test']:.2f} %; dense {result['dense_ms']:.3f} ms "
            f"(batch {result['batch']}, 1 thread, statistic {result['statistic']}); fine-tune "
            f"{result['finetune_images']} images x {result['finetune_epochs']} epoch(s); mean ± std over seeds "
            f"{result['seeds']}; load average {result['load_start']:.1f} at the start, "
            f"{result.get('load_end', float('nan')):.1f} at the end (2 cores)\n\n" + markdown_table(header, rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", default=str(DEFAULT_ROOT))
    parser.add_argument("--speedups", type=float, nargs="+", default=[2.0, 3.0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--variants", nargs="+", default=["flops", "latency", "halp"], choices=list(VARIANTS))
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--statistic", default="cpu", choices=("median", "min", "cpu"))
    parser.add_argument("--match", type=float, default=0.03, help="measured speed-up within this of the target")
    parser.add_argument("--sweep", type=int, default=5, help="knobs measured around the target when open loop misses")
    parser.add_argument("--finetune-images", type=int, default=10000)
    parser.add_argument("--finetune-epochs", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="a few hundred images, 2x, one seed: a smoke run")
    parser.add_argument("--name", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    splits = load_dataset("cifar10-jpeg", root=args.data_root, image_size=32, seed=0)
    if args.quick:
        args.speedups, args.seeds, args.finetune_images = [2.0], [0], 256
        splits.train, splits.val, splits.test = (subset(splits.train, 512, 1), subset(splits.val, 256, 2),
                                                 subset(splits.test, 512, 3))
    name = args.name or ("latency_accuracy_quick" if args.quick else "latency_accuracy")
    dense = create_model("resnet20", num_classes=10, in_channels=3, image_size=32)
    path = checkpoint_path("resnet20", 0)
    load_state(path, dense)
    dense.eval()
    recipe = json.loads(path.with_suffix(".json").read_text())
    example = splits.test[0][0].unsqueeze(0)
    # measurement effort as benchmarks/latency.py: fewer timed calls at batch 64 (each is ~0.1 s)
    settings = ProfileSettings(batch=args.batch, threads=1, statistic=args.statistic,
                               repeats=15 if args.batch == 1 else 5, warmup=3 if args.batch == 1 else 1)
    start_load = load()
    bench = Bench(dense, example, settings)
    loaders = make_loaders(splits, batch_size=RECIPE["batch_size"], seed=0)
    result: dict[str, Any] = {
        "machine": machine(), "hardware": hardware_name(), "dense_checkpoint": str(path.name),
        "dense_epochs": recipe.get("epochs"), "dense": accuracy(dense, loaders), "batch": args.batch, "threads": 1,
        "statistic": args.statistic, "match": args.match, "dense_ms": bench.dense_ms,
        "dense_predicted_ms": bench.dense_predicted, "table": str(bench.table_path),
        "table_held_out_errors": [row["error"] for row in bench.table.validation],
        "finetune_images": args.finetune_images, "finetune_epochs": args.finetune_epochs,
        "finetune_recipe": {"optimizer": "sgd (momentum 0.9, nesterov)", "lr": FINETUNE_LR, "schedule": "cosine",
                            "weight_decay": RECIPE["weight_decay"], "batch_size": RECIPE["batch_size"]},
        "seeds": args.seeds, "variants": {variant: VARIANTS[variant] for variant in args.variants},
        "load_start": start_load, "plans": [], "runs": [],
        "command": "OMP_NUM_THREADS=1 python benchmarks/latency_accuracy.py " + " ".join(sys.argv[1:]),
    }
    print(f"dense: val {result['dense']['val']:.4f} test {result['dense']['test']:.4f}, {bench.dense_ms:.3f} ms "
          f"(predicted {bench.dense_predicted:.3f}); held-out table errors "
          + ", ".join(f"{error:+.1%}" for error in result["table_held_out_errors"]), flush=True)
    finetune_splits = {seed: DataSplits(subset(splits.train, args.finetune_images, seed), splits.val, splits.test,
                                        splits.num_classes, splits.in_channels, splits.image_size, splits.name,
                                        splits.mean, splits.std) for seed in args.seeds}
    plans: dict[tuple[float, str], nn.Module] = {}
    for speedup in args.speedups:
        for variant in args.variants:
            model, row = bench.plan_at(variant, speedup, args.match, args.sweep)
            plans[speedup, variant] = model
            result["plans"].append(row)
            print(f"  {speedup:g}x {variant:10s}: measured {row['measured_speedup']:.3f}x (open loop "
                  f"{row['open_loop_speedup']:.3f}x), FLOPs {1 / row['flops_ratio']:.2f}x", flush=True)
        # the figures reported: every plan of this target measured again in one interleaved session
        final = bench.final_measurement([plans[speedup, variant] for variant in args.variants])
        for variant, (dense_ms, pruned_ms) in zip(args.variants, final):
            row = next(row for row in result["plans"] if row["speedup_target"] == speedup and row["variant"] == variant)
            predicted_ratio = predicted_ms(plans[speedup, variant], example, bench.table, 1.0) / bench.dense_predicted
            row.update(search_speedup=row["measured_speedup"], dense_ms=dense_ms, measured_ms=pruned_ms,
                       measured_speedup=dense_ms / pruned_ms, predicted_ms=predicted_ratio * dense_ms,
                       prediction_error=predicted_ratio * dense_ms / pruned_ms - 1.0)
            print(f"  {speedup:g}x {variant:10s}: final {row['measured_speedup']:.3f}x, predicted "
                  f"{row['predicted_ms']:.2f} ms vs measured {pruned_ms:.2f} ({row['prediction_error']:+.1%})",
                  flush=True)
        write_result_files(result, name, table)
    for seed in args.seeds:  # seed 0 of every plan first: an interrupted run keeps whole comparisons
        for speedup in args.speedups:
            for variant in args.variants:
                run = {"variant": variant, "speedup_target": speedup, "seed": seed,
                       **finetune(plans[speedup, variant], splits, finetune_splits[seed], args.finetune_epochs, seed),
                       "load": load()}
                result["runs"].append(run)
                print(f"  {speedup:g}x seed {seed} {variant:10s}: test {run['after_finetune']['test']:.4f} val "
                      f"{run['after_finetune']['val']:.4f} ({run['finetune_seconds']:.0f} s, load {run['load']:.1f})",
                      flush=True)
                result["load_end"] = load()
                write_result_files(result, name, table)
    result["load_end"] = load()
    write_result_files(result, name, table)
    print(table(result))


if __name__ == "__main__":
    main()
