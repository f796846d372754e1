"""Benchmark: per-layer allocation searches on CIFAR-10 ResNet-20 at 4x and 8x fewer FLOPs.

From the committed dense checkpoint (``checkpoints/resnet20_cifar10_seed0``), each method chooses
per-group keep ratios at the FLOPs budget (metaprune's search space, every plan within ±2 %):

* allocators, one plan each: ``uniform``, ``erk``, ``lamp``, ``dp`` (rate-distortion DP);
* searchers scored by the cheap ``bn_accuracy`` objective (validation accuracy right after
  BatchNorm re-estimation on 5 training batches, on a fixed, seeded subset of the validation split,
  read in 3 growing rounds): Optuna ``tpe`` and ``nsga2`` (the baseline plans enqueued first, as
  ``metaprune search`` does), and ``evolution`` (EvoPress-style, :mod:`metaprune.search.evolution`,
  started from the best of the allocators' plans by the proxy);
* ``tas`` (optional, ``--tas-steps``): a short TAS search of the widths (no distillation here).

Every plan is then applied one-shot (group-L2 channels within each group) and gets exactly the
treatment of ``benchmarks/cifar10.py`` (:func:`cifar10.finetune_and_measure`: BatchNorm re-estimated,
test accuracy, the same fine-tune over the same seeded training subset, val and test accuracy),
once per fine-tune seed. Searches run once per target (search seed ``--seed``). Model selection
uses validation only: the searchers see the validation subset, and the "best searched plan" is the
searched method with the best mean validation accuracy after fine-tune; test accuracy is reported.
Results are written after every run (``results/cifar10_search.{json,md,png}``).

    OMP_NUM_THREADS=1 python benchmarks/cifar10_search.py --quick     # smoke run, a few minutes
    OMP_NUM_THREADS=1 python benchmarks/cifar10_search.py             # the README table
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cifar10 import accuracy, finetune_and_measure, finetune_split, load_dense, subset  # noqa: E402
from cifar10_dense import RECIPE  # noqa: E402
from cifar10_input import DEFAULT_ROOT  # noqa: E402
from common import RESULTS, machine, markdown_table, mean_std  # noqa: E402

from metaprune.data import DataSplits, calibration_batch, load_dataset, make_loaders  # noqa: E402
from metaprune.prune.budget import Budget  # noqa: E402
from metaprune.prune.criteria import get_criterion  # noqa: E402
from metaprune.prune.plan import PrunePlan  # noqa: E402
from metaprune.prune.structured import apply_plan  # noqa: E402
from metaprune.rundir import write_json, write_text  # noqa: E402
from metaprune.search import SearchSetup, SearchSpace, get_method  # noqa: E402
from metaprune.search.bn_accuracy import BNAccuracyObjective  # noqa: E402
from metaprune.search.evolution import EvolutionConfig, evolution_search  # noqa: E402
from metaprune.search.methods import SearchContext  # noqa: E402
from metaprune.search.nas.tas import TASConfig, tas_search  # noqa: E402

ALLOCATORS = ("uniform", "erk", "lamp", "dp")
SEARCHERS = ("tpe", "nsga2", "evolution", "tas")
METHODS = ALLOCATORS + SEARCHERS
MIN_KEEP = 0.1


def search(method: str, context: SearchContext, args: argparse.Namespace) -> tuple[PrunePlan, dict[str, Any]]:
    """The plan of ``method`` at the context's budget and what the search did (proxy score, evaluations, time)."""
    start = time.perf_counter()
    space = context.space
    if method in ALLOCATORS:
        result = get_method(method)(context)
        plan, score, evaluations = result.best_plan, result.best_score, 1
    elif method in ("tpe", "nsga2"):
        context.sampler = method
        result = get_method("optuna")(context)
        plan, score, evaluations = result.best_plan, result.best_score, len(result.trials)
    elif method == "evolution":
        config = EvolutionConfig(generations=args.generations, offspring=args.offspring, seed=args.seed,
                                 move_fraction=args.move_fraction, start=tuple(args.evolution_start))
        result = evolution_search(space, context.objective, context.setup.calibration, config, progress=False)
        plan, score, evaluations = result.best_plan, result.best_score, len(result.trials)
    else:  # tas: the widths searched by TAS, projected onto the budget, scored by the same proxy
        config = TASConfig(epochs=2, steps_per_epoch=max(1, args.tas_steps // 2), seed=args.seed)
        found = tas_search(space, context.setup.splits, context.setup.calibration, config)
        plan = found.plan
        score, evaluations = context.score(space.ratios_of_plan(plan)), 1
    return plan, {"proxy_val_accuracy": score, "evaluations": evaluations,
                  "search_seconds": time.perf_counter() - start, "keep_ratios": plan.keep_ratios,
                  "plan_flops_ratio": plan.flops_ratio}


def finetune_plan(plan: PrunePlan, dense: nn.Module, splits: DataSplits, finetune_splits: DataSplits,
                  calibration: tuple[torch.Tensor, torch.Tensor], epochs: int, seed: int) -> dict[str, Any]:
    """Apply ``plan`` to a copy of ``dense`` and give it the treatment of ``benchmarks/cifar10.py``."""
    start = time.perf_counter()
    loaders = make_loaders(splits, batch_size=RECIPE["batch_size"], seed=seed)
    finetune_loader = make_loaders(finetune_splits, batch_size=RECIPE["batch_size"], seed=seed)[0]
    model = copy.deepcopy(dense)
    apply_plan(model, splits.test[0][0].unsqueeze(0), plan, get_criterion(plan.criterion), calibration)
    measured = finetune_and_measure(model, dense, splits, loaders, finetune_loader, epochs, seed)
    return {**measured, "seconds": time.perf_counter() - start}


def _runs(result: dict[str, Any], speedup: float, method: str) -> list[dict[str, Any]]:
    return [run for run in result["runs"] if run["speedup_target"] == speedup and run["method"] == method]


def best_searched(result: dict[str, Any], speedup: float) -> str | None:
    """The searched method (not uniform) with the best mean val accuracy after fine-tune at ``speedup``."""
    scored = {method: statistics.mean(run["after_finetune"]["val"] for run in _runs(result, speedup, method))
              for method in METHODS if method != "uniform" and _runs(result, speedup, method)}
    return max(scored, key=scored.get) if scored else None


def table(result: dict[str, Any]) -> str:
    """Markdown: per target and method, proxy score, search cost and accuracy before/after fine-tune."""
    rows = []
    for speedup in result["speedups"]:
        uniform = _runs(result, speedup, "uniform")
        base = statistics.mean(run["after_finetune"]["test"] for run in uniform) if uniform else None
        for method in METHODS:
            runs = _runs(result, speedup, method)
            found = result["searches"].get(f"{speedup:g}x/{method}")
            if not runs or found is None:
                continue
            test = statistics.mean(run["after_finetune"]["test"] for run in runs)
            rows.append([f"{speedup:g}x", method, f"{statistics.mean(1 / run['flops_ratio'] for run in runs):.2f}x",
                         f"{100 * found['proxy_val_accuracy']:.2f}", str(found["evaluations"]),
                         f"{found['search_seconds']:.0f}",
                         mean_std(run["before_finetune"]["test"] for run in runs),
                         mean_std(run["after_finetune"]["val"] for run in runs),
                         mean_std(run["after_finetune"]["test"] for run in runs),
                         "" if base is None else f"{100 * (test - base):+.2f}", str(len(runs))])
    header = ["target", "method", "FLOPs speed-up", "proxy val acc (%)", "evaluations", "search s",
              "test acc before FT (%)", "val acc after FT (%)", "test acc after FT (%)", "vs uniform (test)", "seeds"]
    dense = result["dense"]
    lines = [f"Dense ResNet-20 ({result['dense_epochs']} epochs): val {100 * dense['val']:.2f} %, test "
             f"{100 * dense['test']:.2f} %; fine-tune {result['finetune_images']} images x {result['finetune_epochs']} "
             f"epoch(s); mean ± std over fine-tune seeds {result['finetune_seeds']}; proxy: bn_accuracy on "
             f"{result['proxy_samples']} val images", "", markdown_table(header, rows), ""]
    for speedup in result["speedups"]:
        chosen = best_searched(result, speedup)
        if chosen and _runs(result, speedup, "uniform"):
            gap = (statistics.mean(run["after_finetune"]["test"] for run in _runs(result, speedup, chosen))
                   - statistics.mean(run["after_finetune"]["test"] for run in _runs(result, speedup, "uniform")))
            lines.append(f"* {speedup:g}x: best searched plan by validation = {chosen}: {100 * gap:+.2f} test points "
                         "vs uniform")
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> None:
    """Bars: test accuracy after fine-tune (mean, std as error bars) per method, one group per target."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(8, 4))
    speedups = [speedup for speedup in result["speedups"] if any(run["speedup_target"] == speedup for run in result["runs"])]
    methods = [method for method in METHODS if any(_runs(result, speedup, method) for speedup in speedups)]
    if not speedups:
        plt.close(figure)
        return  # searches only so far
    width = 0.8 / len(speedups)
    lows = []
    for offset, speedup in enumerate(speedups):
        values = [[100 * run["after_finetune"]["test"] for run in _runs(result, speedup, method)] for method in methods]
        means = [statistics.mean(v) if v else 0.0 for v in values]
        spreads = [statistics.stdev(v) if len(v) > 1 else 0.0 for v in values]
        lows += [m for m in means if m > 0]
        axis.bar([i + offset * width for i in range(len(methods))], means, width, yerr=spreads, label=f"{speedup:g}x")
    axis.set_xticks([i + width * (len(speedups) - 1) / 2 for i in range(len(methods))], methods, fontsize=9)
    if lows:
        axis.set_ylim(max(0.0, min(lows) - 5), max(lows) + 3)
    axis.set_ylabel("CIFAR-10 test accuracy after fine-tune (%)", fontsize=9)
    axis.set_title(f"ResNet-20 ({result['dense_epochs']}-epoch dense), same fine-tune for every plan", fontsize=9)
    axis.legend(title="FLOPs speed-up", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write_results(result: dict[str, Any], name: str) -> None:
    """``results/<name>.json``, ``.md`` and ``.png``."""
    write_json(RESULTS / f"{name}.json", result)
    write_text(RESULTS / f"{name}.md", table(result) + "\n")
    plot(result, RESULTS / f"{name}.png")


#: Settings a resumed run must share with the stored one.
RESUME_KEYS = ("dense_checkpoint", "dense_epochs", "dense", "finetune_images", "finetune_epochs", "seed", "proxy_samples",
               "min_keep")


def resume(fresh: dict[str, Any], path: Path) -> dict[str, Any]:
    """The stored results at ``path`` (made with the same settings) to add to; ``fresh`` if there are none."""
    if not path.is_file():
        return fresh
    stored = json.loads(path.read_text())
    changed = [key for key in RESUME_KEYS if stored.get(key) != fresh[key]]
    if changed:
        raise SystemExit(f"error: {path} was made with other settings ({', '.join(changed)}); drop --resume or --name")
    for key in ("speedups", "methods", "finetune_seeds"):
        stored[key] = stored[key] + [value for value in fresh[key] if value not in stored[key]]
    stored["commands"] = stored.get("commands", [stored["command"]]) + [fresh["command"]]
    return stored


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", default=str(DEFAULT_ROOT))
    parser.add_argument("--seed", type=int, default=0, help="data split, dense checkpoint, search and proxy seed")
    parser.add_argument("--finetune-seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--speedups", type=float, nargs="+", default=[8, 4])
    parser.add_argument("--methods", nargs="+", default=[m for m in METHODS if m != "tas"], choices=METHODS)
    parser.add_argument("--trials", type=int, default=30, help="Optuna trials (TPE, NSGA-II), baselines included")
    parser.add_argument("--generations", type=int, default=25, help="evolution generations")
    parser.add_argument("--offspring", type=int, default=8, help="evolution offspring per generation")
    parser.add_argument("--move-fraction", type=float, default=1 / 8, help="evolution: channels one move shifts")
    parser.add_argument("--evolution-start", nargs="+", default=["uniform", "erk", "lamp", "dp"],
                        help="allocators whose best plan (by the proxy) starts the evolution")
    parser.add_argument("--tas-steps", type=int, default=200, help="TAS search steps (2 epochs)")
    parser.add_argument("--proxy-samples", type=int, default=2000, help="val images the bn_accuracy proxy scores")
    parser.add_argument("--finetune-images", type=int, default=10000)
    parser.add_argument("--finetune-epochs", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="small subsets, 8x only, few trials: a smoke run")
    parser.add_argument("--resume", action="store_true",
                        help="add to the stored results of the same settings: only missing searches and runs are done")
    parser.add_argument("--name", default=None, help="results/<name>.* (default cifar10_search, or cifar10_search_quick)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    splits = load_dataset("cifar10-jpeg", root=args.data_root, image_size=32, seed=args.seed)
    if args.quick:
        args.speedups, args.finetune_images, args.finetune_seeds = [8], 256, [0]
        args.trials, args.generations, args.offspring, args.proxy_samples, args.tas_steps = 6, 2, 4, 256, 4
        splits.train, splits.val, splits.test = (subset(splits.train, 1024, 1), subset(splits.val, 512, 2),
                                                 subset(splits.test, 512, 3))
    loaders = make_loaders(splits, batch_size=RECIPE["batch_size"], seed=args.seed)
    dense, dense_source = load_dense(args, splits, loaders)
    dense.eval()
    dense_json = Path(__file__).resolve().parent / Path(dense_source).with_suffix(".json")
    dense_epochs = json.loads(dense_json.read_text())["epochs"] if dense_json.is_file() else 1
    finetune_splits = {seed: finetune_split(splits, args.finetune_images, seed) for seed in args.finetune_seeds}
    example_input = splits.test[0][0].unsqueeze(0)
    calibration = calibration_batch(splits, n=256, seed=args.seed)
    name = args.name or ("cifar10_search_quick" if args.quick else "cifar10_search")
    result: dict[str, Any] = {
        "machine": machine(), "dense_checkpoint": dense_source, "dense_epochs": dense_epochs,
        "dense": accuracy(dense, loaders), "speedups": args.speedups, "methods": args.methods,
        "finetune_images": args.finetune_images, "finetune_epochs": args.finetune_epochs,
        "finetune_seeds": args.finetune_seeds, "seed": args.seed, "proxy": "bn_accuracy",
        "proxy_samples": args.proxy_samples, "trials": args.trials, "generations": args.generations,
        "offspring": args.offspring, "move_fraction": args.move_fraction,
        "evolution_start": args.evolution_start, "tas_steps": args.tas_steps, "min_keep": MIN_KEEP,
        "searches": {}, "runs": [],
        "command": "OMP_NUM_THREADS=1 python benchmarks/cifar10_search.py " + " ".join(sys.argv[1:]),
    }
    if args.resume:
        result = resume(result, RESULTS / f"{name}.json")
    print(f"dense ({dense_epochs} epochs): val {result['dense']['val']:.4f} test {result['dense']['test']:.4f}", flush=True)
    for speedup in args.speedups:
        budget = Budget.from_speedup(speedup)
        setup = SearchSetup(dense, example_input, budget, calibration, "bn_accuracy", splits, MIN_KEEP, seed=args.seed)
        space = SearchSpace(dense, example_input, budget, min_keep=MIN_KEEP)
        objective = BNAccuracyObjective(space, splits, calibration, samples=args.proxy_samples, seed=args.seed)
        plans = {}
        for method in args.methods:
            key = f"{speedup:g}x/{method}"
            if key in result["searches"]:  # --resume: the stored plan
                ratios = result["searches"][key]["keep_ratios"]
                plans[method] = space.to_plan(torch.tensor([ratios.get(group, 1.0) for group in space.names]))
                continue
            context = SearchContext(setup, space, objective, trials=args.trials, seed=args.seed, progress=False)
            plans[method], found = search(method, context, args)
            result["searches"][key] = found
            print(f"{speedup:g}x {method:10s} proxy {found['proxy_val_accuracy']:.4f} FLOPs {found['plan_flops_ratio']:.4f} "
                  f"({found['evaluations']} evaluations, {found['search_seconds']:.0f} s)", flush=True)
            write_results(result, name)
        for seed, method in itertools.product(args.finetune_seeds, args.methods):
            if any(run["finetune_seed"] == seed for run in _runs(result, speedup, method)):
                continue
            run = finetune_plan(plans[method], dense, splits, finetune_splits[seed], calibration, args.finetune_epochs, seed)
            result["runs"].append({"method": method, "speedup_target": speedup, "finetune_seed": seed, **run})
            print(f"{speedup:g}x seed {seed} {method:10s} flops {1 / run['flops_ratio']:.2f}x before "
                  f"{run['before_finetune']['test']:.4f} after val {run['after_finetune']['val']:.4f} test "
                  f"{run['after_finetune']['test']:.4f} ({run['seconds']:.0f} s)", flush=True)
            write_results(result, name)
    print(table(result))


if __name__ == "__main__":
    main()
