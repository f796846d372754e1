"""Benchmark: differentiable NAS for pruning on digits.

TAS: ResNet-20 at 2x and 4x FLOPs speed-up. Uniform, Optuna (TPE on the calibration distortion)
and TAS (widths; and widths + depths) choose the architecture from the same dense model; every
architecture then gets the same final training (fine-tune with knowledge distillation from the
dense model, equal epochs). DASS: cell networks at 90% and 95% weight sparsity; DASS (sparse
operations, sparsity-aware architecture step, sparse training) against DARTS (dense search)
whose dense network is trained, globally magnitude-pruned to the same sparsity and fine-tuned, with the
same total epochs. Writes ``results/nas.json`` and prints Markdown tables (test accuracy
mean ± std over seeds, search wall time).

    python benchmarks/nas.py            # 3 seeds, 10 TAS epochs, 50 Optuna trials, 6 cell-search epochs
    python benchmarks/nas.py --quick    # 1 seed, 4 TAS epochs, 10 Optuna trials, 1 cell-search epoch, 8 cell-training epochs
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import dense_digits_model, markdown_table, mean_std, write_json  # noqa: E402

from metaprune.data import make_loaders  # noqa: E402
from metaprune.flops import count_flops  # noqa: E402
from metaprune.prune.budget import Budget  # noqa: E402
from metaprune.search.nas.darts_network import CellNetworkConfig, derived_network  # noqa: E402
from metaprune.search.nas.darts_ops import DARTS_OPERATIONS  # noqa: E402
from metaprune.search.nas.dass import (  # noqa: E402
    DASSConfig,
    magnitude_prune,
    network_config,
    run_dass,
    search_cells,
    train_sparse,
)
from metaprune.search.nas.scored_ops import weight_density  # noqa: E402
from metaprune.search.nas.tas import TASConfig, derive_network, tas_search, train_with_distillation  # noqa: E402
from metaprune.search.space import SearchSpace  # noqa: E402
from metaprune.specs import TaskSpec  # noqa: E402
from metaprune.train import evaluate, fit, seed_everything  # noqa: E402
from metaprune.workflows.search import SearchOptions, run_search  # noqa: E402

TAS_METHODS = ("uniform", "optuna", "tas", "tas+depth")


def search_architecture(method: str, budget: Budget, dense, splits, seed: int, trials: int, tas_epochs: int):
    """(plan, depths) chosen by ``method``: the runner for uniform/optuna/tas, TAS with depth search directly."""
    if method == "tas+depth":
        example = splits.test[0][0].unsqueeze(0)
        space = SearchSpace(copy.deepcopy(dense).eval(), example, budget)
        result = tas_search(space, splits, config=TASConfig(epochs=tas_epochs, search_depth=True, seed=seed))
        return result.plan, result.depths
    with tempfile.TemporaryDirectory() as run_dir:
        options = SearchOptions(budget, method=method, task=TaskSpec(seed=seed),
                                trials=tas_epochs if method == "tas" else trials, objective="distortion", out=run_dir,
                                progress=False)
        result, _ = run_search(options, splits=splits, dense=dense)
    return result.best_plan, {}


def run_tas(seeds: list[int], speedups: list[float], methods: list[str], trials: int, tas_epochs: int, epochs: int,
            finetune_epochs: int) -> list[dict]:
    """Search and train every (seed, speed-up, method) with the same distillation fine-tune; one record each."""
    records = []
    for seed in seeds:
        dense, splits, _ = dense_digits_model("resnet20", seed, epochs)
        example = splits.test[0][0].unsqueeze(0)
        test_loader = make_loaders(splits, batch_size=256)[2]
        dense_flops, dense_accuracy = count_flops(dense, example), evaluate(dense, test_loader)
        for speedup in speedups:
            for method in methods:
                start = time.perf_counter()
                plan, depths = search_architecture(method, Budget.from_speedup(speedup), dense, splits, seed, trials,
                                                   tas_epochs)
                search_seconds = time.perf_counter() - start
                network = derive_network(dense, example, plan, depths)
                train_with_distillation(network, dense, splits, epochs=finetune_epochs, seed=seed)
                records.append({"seed": seed, "speedup": speedup, "method": method, "search_s": search_seconds,
                                "depths": depths, "flops_ratio": count_flops(network, example) / dense_flops,
                                "test_accuracy": evaluate(network, test_loader), "dense_test_accuracy": dense_accuracy})
                print(f"seed {seed} {speedup:g}x {method:10s} test {records[-1]['test_accuracy']:.4f} "
                      f"FLOPs {records[-1]['flops_ratio']:.4f} search {search_seconds:.1f}s", flush=True)
    return records


def magnitude_baseline(splits, genotype, skeleton: CellNetworkConfig, density: float, train_epochs: int,
                       seed: int, dense_state: dict) -> tuple[float, float]:
    """(test accuracy, weight density) of the trained dense cell network, magnitude-pruned and fine-tuned."""
    model = derived_network(skeleton, genotype)
    model.load_state_dict(dense_state)
    magnitude_prune(model, density)
    train_sparse(model, splits, epochs=train_epochs - train_epochs // 2, seed=seed)
    return evaluate(model, make_loaders(splits, batch_size=256)[2]), weight_density(model)


def run_dass_benchmark(seeds: list[int], densities: list[float], search_epochs: int, train_epochs: int,
                       skeleton: CellNetworkConfig) -> list[dict]:
    """DASS against DARTS + magnitude pruning at every density; equal total training epochs."""
    from metaprune.data import load_digits_splits

    records = []
    for seed in seeds:
        splits = load_digits_splits(image_size=16, seed=seed)
        darts = DASSConfig(network=skeleton, operations=DARTS_OPERATIONS, sparsity_aware=False,
                           search_epochs=search_epochs, seed=seed)
        start = time.perf_counter()
        genotype, _ = search_cells(splits, darts)
        darts_seconds = time.perf_counter() - start
        seed_everything(seed)
        dense = derived_network(network_config(darts, splits), genotype)
        fit(dense, make_loaders(splits, seed=seed)[0], epochs=train_epochs // 2, progress=False)
        for density in densities:
            result = run_dass(splits, DASSConfig(density=density, network=skeleton, search_epochs=search_epochs,
                                                 train_epochs=train_epochs, seed=seed))
            baseline, baseline_density = magnitude_baseline(splits, genotype, network_config(darts, splits), density, train_epochs, seed,
                                          dense.state_dict())
            for method, accuracy, seconds, achieved in (
                    ("dass", result.test_accuracy, result.search_seconds, result.density),
                    ("darts+magnitude", baseline, darts_seconds, baseline_density)):
                records.append({"seed": seed, "sparsity": round(1 - density, 4), "method": method,
                                "test_accuracy": accuracy, "search_s": seconds, "weight_density": achieved})
                print(f"seed {seed} sparsity {1 - density:.0%} {method:16s} test {accuracy:.4f} search {seconds:.1f}s",
                      flush=True)
    return records


def table(records: list[dict], key: str, values: list[float], methods: list[str], label: str) -> str:
    """Markdown: test accuracy (mean ± std over seeds) and mean search time per method and setting."""
    header = ["method"] + [f"{label(v)} test acc (%)" for v in values] + [f"{label(v)} search (s)" for v in values]
    rows = []
    for method in methods:
        picked = {v: [r for r in records if r["method"] == method and r[key] == v] for v in values}
        rows.append([method] + [mean_std(r["test_accuracy"] for r in picked[v]) for v in values]
                    + [f"{statistics.mean(r['search_s'] for r in picked[v]):.1f}" for v in values])
    return markdown_table(header, rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 seed and short searches: a smoke run")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--speedups", type=float, nargs="+", default=[2.0, 4.0])
    parser.add_argument("--methods", nargs="+", default=list(TAS_METHODS), choices=TAS_METHODS)
    parser.add_argument("--trials", type=int, default=50, help="Optuna trials")
    parser.add_argument("--tas-epochs", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=10, help="dense ResNet training epochs")
    parser.add_argument("--finetune-epochs", type=int, default=3, help="final training (KD) of every pruned network")
    parser.add_argument("--sparsities", type=float, nargs="+", default=[0.9, 0.95])
    parser.add_argument("--cell-search-epochs", type=int, default=6)
    parser.add_argument("--cell-train-epochs", type=int, default=20)
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.trials, args.tas_epochs, args.cell_search_epochs, args.cell_train_epochs = 1, 10, 4, 1, 8
    seeds = list(range(args.seeds))
    skeleton = CellNetworkConfig(channels=8, layers=5, steps=3)
    tas_records = run_tas(seeds, args.speedups, args.methods, args.trials, args.tas_epochs, args.epochs,
                          args.finetune_epochs)
    densities = [round(1 - sparsity, 6) for sparsity in args.sparsities]
    dass_records = run_dass_benchmark(seeds, densities, args.cell_search_epochs, args.cell_train_epochs, skeleton)
    write_json("nas_quick" if args.quick else "nas", {
        "seeds": seeds, "settings": {key: value for key, value in vars(args).items() if key != "quick"},
        "cell_network": skeleton.to_dict(), "tas": tas_records, "dass": dass_records})
    print(table(tas_records, "speedup", args.speedups, args.methods, lambda s: f"{s:g}x"))
    print()
    print(table(dass_records, "sparsity", [round(s, 4) for s in args.sparsities], ["dass", "darts+magnitude"],
                lambda s: f"{s:.0%} sparse"))


if __name__ == "__main__":
    main()
