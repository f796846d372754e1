"""Benchmark: per-layer allocation searches on CIFAR-10 ResNet-20 at 2x, 4x and 8x fewer FLOPs.

From the committed dense checkpoint (``checkpoints/resnet20_cifar10_seed0``), each method chooses
per-group keep ratios at the FLOPs budget (metaprune's search space, every plan within ±2 %):

* allocators, one plan each: ``uniform``, ``erk``, ``lamp``, ``dp`` (rate-distortion DP);
* searchers scored by the cheap ``bn_accuracy`` objective (validation accuracy right after
  BatchNorm re-estimation on 5 training batches, on a fixed, seeded subset of the validation split,
  read in 3 growing rounds): Optuna ``tpe`` and ``nsga2`` (the baseline plans enqueued first, as
  ``metaprune search`` does), and ``evolution`` (EvoPress-style, :mod:`metaprune.search.evolution`,
  started from the best of the allocators' plans by the proxy);
* ``halp`` (the latency-aware knapsack allocator, HALP, Shen et al., NeurIPS'22): group-L2 importance per
  millisecond saved, priced by this machine's latency table (eager PyTorch, one thread, batch ``--halp-batch``,
  CPU time per run: steady on a shared machine),
  down to the predicted latency of the uniform plan, then projected onto the FLOPs budget;
* ``ray``: Ray Tune (Optuna TPE proposals, ASHA over the proxy's rounds, one worker), baselines enqueued;
* ``tas`` and ``tas_mean`` (not in the default list, ``--tas-*``): one short TAS search (Dong & Yang,
  NeurIPS'19) per target on the training split: width logits by Gumbel-softmax, the FLOPs loss, weights
  trained on one half and logits on the other. ``tas`` takes each group's most probable width (the
  paper), ``tas_mean`` the expected width; both projected onto the budget. The search's own weights are
  dropped: the plan is applied to the dense model and gets the same fine-tune as every other plan (no
  distillation), so only the allocation is compared.

Every plan is then applied one-shot (group-L2 channels within each group) and gets exactly the
treatment of ``benchmarks/cifar10.py`` (:func:`cifar10.finetune_and_measure`: BatchNorm re-estimated,
test accuracy, the same fine-tune over the same seeded training subset, val and test accuracy),
once per fine-tune seed. Searches run once per target and search seed (``--seed``; ``--search-seed S``
adds rows ``<method>@s<S>`` with another calibration batch, proxy subset and sampler seed). Model selection
uses validation only: the searchers see the validation subset, and the "best searched plan" is the
searched method with the best mean validation accuracy after fine-tune; test accuracy is reported.
Every plan's predicted latency speed-up comes from the same batch-64 table as HALP's. Results are written
after every run (``results/cifar10_search.{json,md,png}``).

    OMP_NUM_THREADS=1 python benchmarks/cifar10_search.py --quick     # smoke run, a few minutes
    OMP_NUM_THREADS=1 python benchmarks/cifar10_search.py             # the README table
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
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
from common import RESULTS, machine, markdown_table, mean_std, write_result_files  # noqa: E402

from metaprune.data import DataSplits, calibration_batch, load_dataset, make_loaders  # noqa: E402
from metaprune.latency import LatencyCostModel, ProfileSettings, load_or_profile  # noqa: E402
from metaprune.prune.budget import Budget  # noqa: E402
from metaprune.prune.criteria import get_criterion  # noqa: E402
from metaprune.prune.plan import PrunePlan  # noqa: E402
from metaprune.prune.structured import apply_plan  # noqa: E402
from metaprune.search import SearchSetup, SearchSpace, get_method  # noqa: E402
from metaprune.search.allocators import HALPAllocator  # noqa: E402
from metaprune.search.bn_accuracy import BNAccuracyObjective  # noqa: E402
from metaprune.search.evolution import EvolutionConfig, evolution_search  # noqa: E402
from metaprune.search.methods import SearchContext  # noqa: E402
from metaprune.search.nas.tas import TASConfig, TASSearch  # noqa: E402

ALLOCATORS = ("uniform", "erk", "lamp", "dp", "halp")
SEARCHERS = ("tpe", "nsga2", "ray", "evolution", "tas", "tas_mean")
METHODS = ALLOCATORS + SEARCHERS
MIN_KEEP = 0.1


def search(method: str, context: SearchContext, args: argparse.Namespace) -> tuple[PrunePlan, dict[str, Any]]:
    """The plan of ``method`` at the context's budget and what the search did (proxy score, evaluations, time)."""
    start = time.perf_counter()
    space = context.space
    extra: dict[str, Any] = {}
    if method == "halp":  # priced by this machine's latency table at --halp-batch images, one thread
        allocator = HALPAllocator()
        allocator.profile_settings = ProfileSettings(batch=args.halp_batch, threads=1, statistic="cpu")
        plan = allocator.allocate(space, context.setup.calibration)
        score, evaluations = context.score(space.ratios_of_plan(plan)), 1
        extra["latency_table"] = f"torch eager, 1 thread, batch {args.halp_batch}, CPU time per run"
    elif method in ALLOCATORS:
        result = get_method(method)(context)
        plan, score, evaluations = result.best_plan, result.best_score, 1
    elif method == "ray":  # Optuna TPE proposals + ASHA over the proxy's rounds, one worker (one core)
        context.workers = 1
        result = get_method("ray")(context)
        plan, score, evaluations = result.best_plan, result.best_score, len(result.trials)
        extra["completed_trials"] = sum(trial.state == "COMPLETE" for trial in result.trials)
    elif method in ("tpe", "nsga2"):
        context.sampler = method
        result = get_method("optuna")(context)
        plan, score, evaluations = result.best_plan, result.best_score, len(result.trials)
    elif method == "evolution":
        config = EvolutionConfig(generations=args.generations, offspring=args.offspring, seed=context.seed,
                                 move_fraction=args.move_fraction, start=tuple(args.evolution_start))
        result = evolution_search(space, context.objective, context.setup.calibration, config, progress=False)
        plan, score, evaluations = result.best_plan, result.best_score, len(result.trials)
    else:  # tas / tas_mean: one TAS search per target, two derivations, scored by the same proxy
        found = tas_plans(context, args, context.seed)
        plan = found["plans"][method]
        score, evaluations = context.score(space.ratios_of_plan(plan)), 1
        extra["tas"] = found["record"]
        start = time.perf_counter() - found["seconds"]  # both derivations report the one shared search's time
    return plan, {"proxy_val_accuracy": score, "evaluations": evaluations,
                  "search_seconds": time.perf_counter() - start, "keep_ratios": plan.keep_ratios,
                  "plan_flops_ratio": plan.flops_ratio, **extra}


def tas_config(args: argparse.Namespace, seed: int) -> TASConfig:
    """The TAS search of ``--tas-*``: ``--tas-steps`` steps over ``--tas-epochs`` temperature stages."""
    epochs = max(1, min(args.tas_epochs, args.tas_steps))
    return TASConfig(fractions=tuple(args.tas_fractions), epochs=epochs, steps_per_epoch=max(1, args.tas_steps // epochs),
                     cost_weight=args.tas_cost_weight, arch_lr=args.tas_arch_lr, weight_lr=args.tas_weight_lr,
                     seed=seed)


#: One TAS search per (target, config), shared by its two derivations.
_TAS_SEARCHES: dict[tuple[float, str], dict[str, Any]] = {}


def tas_plans(context: SearchContext, args: argparse.Namespace, seed: int) -> dict[str, Any]:
    """TAS on the dense model at the context's budget, derived two ways, both projected onto the budget.

    ``tas``: the most probable width of every group (the paper's argmax); ``tas_mean``: the expected
    width under the final distributions, steadier when a short search leaves them spread out.
    """
    space, config = context.space, tas_config(args, seed)
    key = (space.budget.flops_ratio, json.dumps(dataclasses.asdict(config)))
    if key not in _TAS_SEARCHES:
        start = time.perf_counter()
        searcher = TASSearch(space, context.setup.calibration, config)
        history = searcher.search(context.setup.splits, progress=True)
        seconds = time.perf_counter() - start
        mean, _ = searcher.widths.ratio_moments()
        plans = {"tas": searcher.derive(history, seconds).plan,
                 "tas_mean": space.to_plan(space.project(mean.detach()))}
        record = {"config": dataclasses.asdict(config),
                  "history": [{name: entry[name] for name in ("epoch", "temperature", "weight_loss", "arch_loss",
                                                               "expected_flops_ratio", "argmax_flops_ratio")}
                              for entry in history],
                  "width_candidates": {name: counts.tolist() for name, counts in zip(space.names, searcher.widths.counts)},
                  "width_probabilities": {name: [round(p, 4) for p in probabilities.tolist()] for name, probabilities
                                          in zip(space.names, searcher.widths.probabilities())}}
        _TAS_SEARCHES[key] = {"plans": plans, "record": record, "seconds": seconds}
    return _TAS_SEARCHES[key]


def predicted_latency(result: dict[str, Any], space: SearchSpace, speedup: float, table: Any) -> None:
    """Add each stored plan's predicted latency (ms, from ``table``) at ``speedup`` and the dense one, where missing."""
    model = LatencyCostModel(space.groups, table)
    result.setdefault("latency", {"table": f"torch eager, 1 thread, batch {table.key.batch}, CPU time per run",
                                  "dense_ms": model.latency_ms(space.sizes)})
    for key, found in result["searches"].items():
        if key.startswith(f"{speedup:g}x/") and "predicted_latency_ms" not in found:
            ratios = torch.tensor([found["keep_ratios"].get(group, 1.0) for group in space.names], dtype=torch.float64)
            found["predicted_latency_ms"] = model.latency_ms(space.counts_of(ratios))


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


def label(method: str, search_seed: int, seed: int) -> str:
    """The name of ``method``'s rows: the method itself for the main search seed, ``method@s<seed>`` for another."""
    return method if search_seed == seed else f"{method}@s{search_seed}"


def labels(result: dict[str, Any], speedup: float) -> list[str]:
    """Every method label with runs at ``speedup``: each method, then its other search seeds."""
    present = {run["method"] for run in result["runs"] if run["speedup_target"] == speedup}
    return [name for method in METHODS for name in [method, *sorted(p for p in present if p.startswith(method + "@"))]
            if name in present]


def over_search_seeds(result: dict[str, Any], speedup: float) -> list[str]:
    """Lines: for each method searched with several seeds, test accuracy over all its runs vs uniform."""
    lines = []
    uniform = _runs(result, speedup, "uniform")
    for method in METHODS:
        variants = [name for name in labels(result, speedup) if name.startswith(method + "@")]
        if not variants or not _runs(result, speedup, method):
            continue
        runs = [run for name in [method, *variants] for run in _runs(result, speedup, name)]
        seeds = [result["seed"]] + [int(name.split("@s")[1]) for name in variants]
        test = statistics.mean(run["after_finetune"]["test"] for run in runs)
        gap = f", {100 * (test - statistics.mean(r['after_finetune']['test'] for r in uniform)):+.2f} vs uniform" \
            if uniform else ""
        lines.append(f"* {speedup:g}x: {method} over search seeds {seeds} x fine-tune seeds ({len(runs)} runs): test "
                     f"{mean_std(run['after_finetune']['test'] for run in runs)}{gap}")
    return lines


def best_searched(result: dict[str, Any], speedup: float) -> str | None:
    """The searched method (not uniform) with the best mean val accuracy after fine-tune at ``speedup``."""
    scored = {method: statistics.mean(run["after_finetune"]["val"] for run in _runs(result, speedup, method))
              for method in METHODS if method != "uniform" and _runs(result, speedup, method)}
    return max(scored, key=scored.get) if scored else None


def latency_cell(result: dict[str, Any], found: dict[str, Any]) -> str:
    """Dense over predicted latency of the plan (batch-64 table), or blank."""
    if "predicted_latency_ms" not in found or "latency" not in result:
        return ""
    return f"{result['latency']['dense_ms'] / found['predicted_latency_ms']:.2f}x"


def table(result: dict[str, Any]) -> str:
    """Markdown: per target and method, proxy score, search cost and accuracy before/after fine-tune."""
    rows = []
    for speedup in result["speedups"]:
        uniform = _runs(result, speedup, "uniform")
        base = statistics.mean(run["after_finetune"]["test"] for run in uniform) if uniform else None
        for method in labels(result, speedup):
            runs = _runs(result, speedup, method)
            found = result["searches"].get(f"{speedup:g}x/{method}")
            if not runs or found is None:
                continue
            test = statistics.mean(run["after_finetune"]["test"] for run in runs)
            rows.append([f"{speedup:g}x", method, f"{statistics.mean(1 / run['flops_ratio'] for run in runs):.2f}x",
                         f"{100 * found['proxy_val_accuracy']:.2f}", str(found["evaluations"]),
                         f"{found['search_seconds']:.0f}", latency_cell(result, found),
                         mean_std(run["before_finetune"]["test"] for run in runs),
                         mean_std(run["after_finetune"]["val"] for run in runs),
                         mean_std(run["after_finetune"]["test"] for run in runs),
                         "" if base is None else f"{100 * (test - base):+.2f}", str(len(runs))])
    header = ["target", "method", "FLOPs speed-up", "proxy val acc (%)", "evaluations", "search s",
              "predicted latency speed-up (b64)",
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
        lines += over_search_seeds(result, speedup)
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
        axis.set_ylim(max(0.0, min(lows) - 5), max(lows) + 9)
    axis.set_ylabel("CIFAR-10 test accuracy after fine-tune (%)", fontsize=9)
    axis.set_title(f"ResNet-20 ({result['dense_epochs']}-epoch dense), same fine-tune for every plan", fontsize=9)
    axis.legend(title="FLOPs speed-up", fontsize=8, title_fontsize=8, ncol=len(speedups), loc="upper center")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


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
    parser.add_argument("--search-seed", type=int, default=None,
                        help="another search seed (searches' calibration batch, proxy images, samplers); rows "
                             "'<method>@s<seed>' beside the --seed ones (default: --seed)")
    parser.add_argument("--finetune-seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--speedups", type=float, nargs="+", default=[8, 4])
    parser.add_argument("--methods", nargs="+", default=[m for m in METHODS if m not in ("tas", "tas_mean")],
                        choices=METHODS)
    parser.add_argument("--trials", type=int, default=30, help="Optuna trials (TPE, NSGA-II), baselines included")
    parser.add_argument("--generations", type=int, default=25, help="evolution generations")
    parser.add_argument("--offspring", type=int, default=8, help="evolution offspring per generation")
    parser.add_argument("--move-fraction", type=float, default=1 / 8, help="evolution: channels one move shifts")
    parser.add_argument("--evolution-start", nargs="+", default=["uniform", "erk", "lamp", "dp"],
                        help="allocators whose best plan (by the proxy) starts the evolution")
    parser.add_argument("--tas-steps", type=int, default=400, help="TAS search steps (weight + architecture update each)")
    parser.add_argument("--tas-epochs", type=int, default=8, help="TAS temperature stages (10 -> 0.1) over the steps")
    parser.add_argument("--tas-fractions", type=float, nargs="+", default=list(TASConfig.fractions),
                        help="TAS width candidates, fractions of each group")
    parser.add_argument("--tas-cost-weight", type=float, default=TASConfig.cost_weight, help="TAS FLOPs-loss weight")
    parser.add_argument("--tas-arch-lr", type=float, default=TASConfig.arch_lr, help="TAS architecture Adam lr")
    parser.add_argument("--tas-weight-lr", type=float, default=TASConfig.weight_lr, help="TAS weight SGD lr")
    parser.add_argument("--halp-batch", type=int, default=64, help="batch of HALP's latency table (one thread)")
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
    search_seed = args.seed if args.search_seed is None else args.search_seed
    search_calibration = calibration if search_seed == args.seed else calibration_batch(splits, n=256, seed=search_seed)
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
        setup = SearchSetup(dense, example_input, budget, search_calibration, "bn_accuracy", splits, MIN_KEEP,
                            seed=search_seed)
        space = SearchSpace(dense, example_input, budget, min_keep=MIN_KEEP)
        objective = BNAccuracyObjective(space, splits, search_calibration, samples=args.proxy_samples, seed=search_seed)
        latency_settings = ProfileSettings(batch=args.halp_batch, threads=1, statistic="cpu")
        plans = {}
        for method in args.methods:
            name_of = label(method, search_seed, args.seed)
            key = f"{speedup:g}x/{name_of}"
            if key in result["searches"]:  # --resume: the stored plan
                ratios = result["searches"][key]["keep_ratios"]
                plans[method] = space.to_plan(torch.tensor([ratios.get(group, 1.0) for group in space.names]))
                continue
            context = SearchContext(setup, space, objective, trials=args.trials, seed=search_seed, progress=False)
            plans[method], found = search(method, context, args)
            result["searches"][key] = {**found, "search_seed": search_seed}
            print(f"{speedup:g}x {name_of:10s} proxy {found['proxy_val_accuracy']:.4f} FLOPs {found['plan_flops_ratio']:.4f} "
                  f"({found['evaluations']} evaluations, {found['search_seconds']:.0f} s)", flush=True)
            write_result_files(result, name, table, plot)
        predicted_latency(result, space, speedup, load_or_profile(dense, example_input, latency_settings)[0])
        for seed, method in itertools.product(args.finetune_seeds, args.methods):
            name_of = label(method, search_seed, args.seed)
            if any(run["finetune_seed"] == seed for run in _runs(result, speedup, name_of)):
                continue
            run = finetune_plan(plans[method], dense, splits, finetune_splits[seed], calibration, args.finetune_epochs, seed)
            result["runs"].append({"method": name_of, "speedup_target": speedup, "finetune_seed": seed,
                                   "search_seed": search_seed, **run})
            print(f"{speedup:g}x seed {seed} {name_of:10s} flops {1 / run['flops_ratio']:.2f}x before "
                  f"{run['before_finetune']['test']:.4f} after val {run['after_finetune']['val']:.4f} test "
                  f"{run['after_finetune']['test']:.4f} ({run['seconds']:.0f} s)", flush=True)
            write_result_files(result, name, table, plot)
    write_result_files(result, name, table, plot)
    print(table(result))


if __name__ == "__main__":
    main()
