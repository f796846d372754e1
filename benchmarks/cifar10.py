"""Benchmark: structured-pruning methods on CIFAR-10 ResNet-20 at 2x, 4x and 8x fewer FLOPs.

Every method starts from the same committed dense model (``checkpoints/resnet20_cifar10_seed0``,
trained by ``benchmarks/cifar10_dense.py``) and gets the identical treatment after pruning:
BatchNorm statistics re-estimated on 10 training batches, accuracy measured ("before
fine-tune"), then the same fine-tune (SGD Nesterov, lr 0.01 cosine, weight decay 5e-4, batch
128, augmented) over the same fixed, seeded subset of the training split, and accuracy
measured again. Methods:

* metaprune criteria, one global ranking across coupled groups: ``group_l2``,
  ``output_group_l2``, ``taylor`` and ``random``;
* ``uniform``: metaprune ``group_l2`` with local ranking, the same keep ratio in every group;
* raw torch-pruning 1.6 with global pruning: ``tp_group_norm`` (``GroupNormPruner`` with
  ``GroupMagnitudeImportance(p=2)``, no sparsity training) and ``tp_magnitude``
  (``MagnitudePruner`` with ``MagnitudeImportance(p=1)``); its channel ratio is bisected until
  the FLOPs (metaprune's counter) are within 2 % of the target, ``max_pruning_ratio`` 0.9 as
  metaprune's ``min_keep`` 0.1.

* metaprune meta-pruning with a metanetwork meta-trained on CIFAR-10 (``--metanet PATH``, from
  ``metaprune meta train --data cifar10-jpeg``): ``meta`` rewrites the dense model with the
  metanetwork, re-estimates BatchNorm, fine-tunes the rewritten network briefly
  (``--meta-finetune-images``, 1 epoch, the same recipe as after pruning, on another seeded
  subset) and prunes it with the output-sensitive group L2 ranking; ``meta_rewrite_only`` skips
  that fine-tune (it is ``--criterion meta``); ``meta_group_l2`` is ``meta_rewrite_only`` ranked by
  the full group L2 norm (``--criterion meta_group_l2``); ``output_group_l2_ft`` is the control: the same pre-prune fine-tune without
  the rewrite. Every method then gets the identical fine-tune below.

Model selection uses validation only (5,000 images held out of the training tree); test
accuracy is reported. Results are written after every run (``results/<name>.json``, ``.md``,
``.png``), so an interrupted comparison keeps what it finished; ``--resume`` skips the runs
already in ``results/<name>.json`` and ``--baselines-from results/cifar10.json`` copies runs of
other methods measured with the same fine-tune into the table.

    OMP_NUM_THREADS=1 python benchmarks/cifar10.py --quick                 # smoke run, < 2 min
    OMP_NUM_THREADS=1 python benchmarks/cifar10.py --finetune-seeds 0 1  # the README table
    OMP_NUM_THREADS=1 python benchmarks/cifar10.py --finetune-seeds 0 1 --methods meta --metanet runs/meta-cifar \
        --name cifar10_meta --resume --baselines-from cifar10          # meta vs the table's baselines
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

from cifar10_dense import RECIPE, checkpoint_path  # noqa: E402
from cifar10_input import DEFAULT_ROOT  # noqa: E402
from common import RESULTS, machine, markdown_table, mean_std, write_result_files  # noqa: E402

from metaprune.data import DataSplits, UInt8ImageDataset, calibration_batch, load_dataset, make_loaders  # noqa: E402
from metaprune.flops import count_flops  # noqa: E402
from metaprune.meta import pruning as _meta_pruning  # noqa: E402, F401  (registers the ``meta`` criterion)
from metaprune.models import create_model  # noqa: E402
from metaprune.prune.criteria import get_criterion  # noqa: E402
from metaprune.prune.structured import StructuredPruner  # noqa: E402
from metaprune.train import evaluate, fit, load_state, recalibrate_batchnorm, seed_everything  # noqa: E402

#: method name -> (library, criterion or importance, ranking)
METHODS: dict[str, tuple[str, str, str]] = {
    "group_l2": ("metaprune", "group_l2", "global"),
    "tp_group_norm": ("torch-pruning", "group_norm", "global"),
    "uniform": ("metaprune", "group_l2", "local"),
    "taylor": ("metaprune", "taylor", "global"),
    "output_group_l2": ("metaprune", "output_group_l2", "global"),
    "tp_magnitude": ("torch-pruning", "magnitude", "global"),
    "random": ("metaprune", "random", "global"),
    "meta": ("metaprune", "meta", "global"),
    "meta_rewrite_only": ("metaprune", "meta", "global"),
    "meta_group_l2": ("metaprune", "meta_group_l2", "global"),
    "output_group_l2_ft": ("metaprune", "output_group_l2", "global"),
}
#: Methods that fine-tune the (rewritten) dense network before pruning, and those that need ``--metanet``.
PRE_FINETUNED = {"meta", "output_group_l2_ft"}
META_METHODS = {"meta", "meta_rewrite_only", "meta_group_l2"}
FINETUNE_LR = 0.01
MIN_KEEP = 0.1
FLOPS_TOLERANCE = 0.02
#: Published CIFAR-10 figures of the anchors (ResNet-56, full recipes, original PNG data): context only.
ANCHORS = [
    ("DepGraph (Fang et al., CVPR'23), ResNet-56", "93.53 dense -> 93.77", "2.13x"),
    ("DepGraph, ResNet-56", "93.53 dense -> 93.64", "2.57x"),
    ("MetaPruning-GNN (graph-metanetwork meta-pruning), ResNet-56", "93.56-94.08", "~2.3x"),
    ("MetaPruning-GNN, ResNet-56", "93.18-93.69", "~3x"),
    ("TAS (Dong & Yang, NeurIPS'19), ResNet-56", "93.69", "~2.1x"),
]


def subset(dataset: UInt8ImageDataset, count: int, seed: int) -> UInt8ImageDataset:
    """``count`` images of ``dataset`` chosen with ``seed`` (same augmentation settings)."""
    chosen = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:count].sort().values
    return UInt8ImageDataset(dataset.images[chosen], dataset.labels[chosen], dataset.mean, dataset.std,
                             augment=dataset.augment, seed=dataset.seed, channels_last=dataset.channels_last)


def finetune_split(splits: DataSplits, images: int, seed: int) -> DataSplits:
    """``splits`` with its training split cut to the fixed, seeded ``images``-image fine-tuning subset."""
    return DataSplits(subset(splits.train, images, seed), splits.val, splits.test, splits.num_classes,
                      splits.in_channels, splits.image_size, splits.name, splits.mean, splits.std)


def prune_metaprune(dense: nn.Module, criterion_name: str, ranking: str, flops_ratio: float, splits: DataSplits,
                    loaders: tuple, seed: int, *, metanet: str | None = None, pre_finetune: Any = None,
                    extra: dict[str, Any] | None = None) -> nn.Module:
    """A pruned copy of ``dense`` by metaprune's structured engine (one-shot, as ``metaprune prune`` does).

    ``metanet`` (criterion ``meta``): the dense copy is rewritten by it first; ``pre_finetune``
    (a loader): the (rewritten) copy is fine-tuned 1 epoch on it before it is scored and pruned.
    ``extra`` receives the rewritten network's and pre-fine-tuned network's validation accuracy.
    """
    example_input = splits.test[0][0].unsqueeze(0)
    seed_everything(seed)
    criterion = get_criterion(criterion_name, seed=seed, **({"metanet": metanet} if metanet is not None else {}))
    model, prepared = criterion.prepare(copy.deepcopy(dense), example_input, loaders)
    if extra is not None:
        extra.update(prepared)
    if pre_finetune is not None:
        seed_everything(seed)
        start = time.perf_counter()
        fit(model, pre_finetune, epochs=1, lr=FINETUNE_LR, optimizer="sgd", weight_decay=RECIPE["weight_decay"],
            progress=False)
        model.eval()
        if extra is not None:
            extra["pre_finetune_seconds"] = time.perf_counter() - start
            extra["pre_finetuned_val_accuracy"] = evaluate(model, loaders[1])
    pruner = StructuredPruner(model, example_input, criterion, ranking=ranking, min_keep=MIN_KEEP,
                              calibration=calibration_batch(splits, n=256, seed=seed))
    pruner.prune_to(model, flops_ratio)
    return model


def _tp_pruned(dense: nn.Module, importance_name: str, ratio: float, example_input: torch.Tensor) -> nn.Module:
    import torch_pruning as tp

    model = copy.deepcopy(dense)
    if importance_name == "group_norm":
        pruner_class, importance = tp.pruner.GroupNormPruner, tp.importance.GroupMagnitudeImportance(p=2)
    else:
        pruner_class, importance = tp.pruner.MagnitudePruner, tp.importance.MagnitudeImportance(p=1)
    pruner = pruner_class(model, example_input, importance=importance, global_pruning=True, pruning_ratio=ratio,
                          max_pruning_ratio=1 - MIN_KEEP, ignored_layers=[model.fc])
    pruner.step()
    return model


def prune_torch_pruning(dense: nn.Module, importance_name: str, flops_ratio: float, splits: DataSplits) -> nn.Module:
    """A pruned copy of ``dense`` by raw torch-pruning, its channel ratio bisected to the FLOPs target."""
    example_input = splits.test[0][0].unsqueeze(0)
    dense_flops = count_flops(dense, example_input)
    low, high, best = 0.0, 1 - MIN_KEEP, None
    for _ in range(14):
        ratio = (low + high) / 2
        model = _tp_pruned(dense, importance_name, ratio, example_input)
        kept = count_flops(model, example_input) / dense_flops
        if best is None or abs(kept - flops_ratio) < abs(best[0] - flops_ratio):
            best = (kept, model)
        if abs(kept - flops_ratio) <= FLOPS_TOLERANCE * flops_ratio:
            break
        low, high = (ratio, high) if kept > flops_ratio else (low, ratio)
    return best[1]


def accuracy(model: nn.Module, loaders: tuple) -> dict[str, float]:
    """Validation and test accuracy."""
    return {"val": evaluate(model, loaders[1]), "test": evaluate(model, loaders[2])}


def run_method(method: str, speedup: float, dense: nn.Module, splits: DataSplits, finetune_splits: DataSplits,
               finetune_epochs: int, seed: int, *, metanet: str | None = None,
               pre_finetune_splits: DataSplits | None = None) -> dict[str, Any]:
    """Prune ``dense`` with ``method`` to ``1/speedup`` of its FLOPs, re-estimate BN, fine-tune, measure.

    The loaders are made afresh from ``seed`` for every run, so every method sees the same
    BatchNorm batches and the same fine-tuning batches (order, crops and flips).
    """
    library, name, ranking = METHODS[method]
    loaders = make_loaders(splits, batch_size=RECIPE["batch_size"], seed=seed)
    finetune_loader = make_loaders(finetune_splits, batch_size=RECIPE["batch_size"], seed=seed)[0]
    start = time.perf_counter()
    extra: dict[str, Any] = {}
    if library == "metaprune":
        pre_finetune = None
        if method in PRE_FINETUNED:
            pre_finetune = make_loaders(pre_finetune_splits, batch_size=RECIPE["batch_size"], seed=seed)[0]
            extra["pre_finetune_images"] = len(pre_finetune_splits.train)
        model = prune_metaprune(dense, name, ranking, 1 / speedup, splits, loaders, seed,
                                metanet=metanet if method in META_METHODS else None, pre_finetune=pre_finetune,
                                extra=extra)
    else:
        model = prune_torch_pruning(dense, name, 1 / speedup, splits)
    prune_seconds = time.perf_counter() - start
    measured = finetune_and_measure(model, dense, splits, loaders, finetune_loader, finetune_epochs, seed)
    return {"method": method, "library": library, "speedup_target": speedup, "finetune_seed": seed, **measured,
            "prune_seconds": prune_seconds, "seconds": time.perf_counter() - start, **extra}


def finetune_and_measure(model: nn.Module, dense: nn.Module, splits: DataSplits, loaders: tuple,
                         finetune_loader: Any, finetune_epochs: int, seed: int) -> dict[str, Any]:
    """The treatment every pruned model gets, in place: BN re-estimated, test accuracy, the fine-tune, val/test accuracy.

    BatchNorm is re-estimated on the first 10 batches of ``loaders[0]``; the fine-tune is SGD
    Nesterov, lr :data:`FINETUNE_LR` cosine, the dense recipe's weight decay, over ``finetune_loader``
    for ``finetune_epochs``, seeded by ``seed``. ``benchmarks/cifar10_search.py`` uses it too.
    """
    example_input = splits.test[0][0].unsqueeze(0)
    recalibrate_batchnorm(model, loaders[0])
    before = {"test": evaluate(model, loaders[2])}  # validation is only needed where something is selected
    seed_everything(seed)
    tuned = fit(model, finetune_loader, epochs=finetune_epochs, lr=FINETUNE_LR, optimizer="sgd",
                weight_decay=RECIPE["weight_decay"], progress=False)
    after = accuracy(model, loaders)
    return {"flops": count_flops(model, example_input), "flops_ratio": count_flops(model, example_input)
            / count_flops(dense, example_input), "params": sum(p.numel() for p in model.parameters()),
            "before_finetune": before, "after_finetune": after, "finetune_seconds": tuned.wall_time_s}


def _grouped(result: dict[str, Any]) -> dict[tuple[float, str], list[dict[str, Any]]]:
    """Runs by (target, method), in the order they were run."""
    groups: dict[tuple[float, str], list[dict[str, Any]]] = {}
    for run in result["runs"]:
        groups.setdefault((run["speedup_target"], run["method"]), []).append(run)
    return groups


def table(result: dict[str, Any]) -> str:
    """Markdown table: accuracy before/after fine-tune per target and method (mean ± std over fine-tune seeds)."""
    rows = []
    for (speedup, method), runs in sorted(_grouped(result).items(), key=lambda item: (item[0][0], item[0][1])):
        rows.append([f"{speedup:g}x", method, f"{statistics.mean(1 / run['flops_ratio'] for run in runs):.2f}x",
                     mean_std(run["before_finetune"]["test"] for run in runs),
                     mean_std(run["after_finetune"]["val"] for run in runs),
                     mean_std(run["after_finetune"]["test"] for run in runs), str(len(runs)),
                     f"{statistics.mean(run['seconds'] for run in runs):.0f}"])
    dense = result["dense"]
    header = ["target", "method", "FLOPs speed-up", "test acc before FT (%)", "val acc after FT (%)",
              "test acc after FT (%)", "seeds", "wall s / run"]
    return (f"Dense ResNet-20: val {100 * dense['val']:.2f} %, test {100 * dense['test']:.2f} %; fine-tune "
            f"{result['finetune_images']} images x {result['finetune_epochs']} epoch(s); mean ± std over fine-tune seeds\n\n"
            + markdown_table(header, rows))


def plot(result: dict[str, Any], path: Path) -> None:
    """Test accuracy after fine-tune (mean over seeds) vs FLOPs speed-up, one line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6.5, 4))
    groups = _grouped(result)
    for method in METHODS:
        points = sorted((speedup, runs) for (speedup, name), runs in groups.items() if name == method)
        if points:
            axis.plot([statistics.mean(1 / run["flops_ratio"] for run in runs) for _, runs in points],
                      [100 * statistics.mean(run["after_finetune"]["test"] for run in runs) for _, runs in points],
                      marker="o", label=method, linestyle="--" if method.startswith("tp_") else "-")
    axis.axhline(100 * result["dense"]["test"], color="k", linewidth=0.8, label="dense")
    axis.set_xscale("log", base=2)
    axis.set_xlabel("FLOPs speed-up")
    axis.set_ylabel("CIFAR-10 test accuracy after fine-tune (%)")
    axis.set_title(f"ResNet-20, fine-tune {result['finetune_images']} images x {result['finetune_epochs']}", fontsize=9)
    axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def copied_runs(source: str, result: dict[str, Any], skip: set[str]) -> list[dict[str, Any]]:
    """The runs of ``results/<source>.json`` of methods not in ``skip``, if its dense model and fine-tune match.

    Runs of the metanetwork methods are never copied: they belong to the metanetwork they were run with.
    """
    other = json.loads((RESULTS / f"{source}.json").read_text())
    keys = ("dense_checkpoint", "finetune_images", "finetune_epochs", "finetune_recipe", "seed")
    if any(other.get(key) != result[key] for key in keys) or other["dense"] != result["dense"]:
        raise SystemExit(f"error: results/{source}.json used another dense model or fine-tune; not copied")
    return [{**run, "copied_from": f"results/{source}.json"} for run in other["runs"]
            if run["method"] not in skip | META_METHODS and run["finetune_seed"] in result["finetune_seeds"]]


def load_dense(args: argparse.Namespace, splits: DataSplits, loaders: tuple) -> tuple[nn.Module, str]:
    """The committed dense checkpoint, or (``--quick`` without one) a dense model trained 1 epoch on the subset."""
    model = create_model("resnet20", num_classes=10, in_channels=3, image_size=32)
    path = checkpoint_path("resnet20", args.seed)
    if path.is_file():
        load_state(path, model)
        return model, str(path.relative_to(Path(__file__).resolve().parent))
    if not args.quick:
        raise SystemExit(f"error: {path} is missing; train it with benchmarks/cifar10_dense.py")
    seed_everything(args.seed)
    fit(model, loaders[0], epochs=1, lr=RECIPE["lr"], optimizer="sgd", progress=False)
    return model, "trained 1 epoch on the --quick subset"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", default=str(DEFAULT_ROOT))
    parser.add_argument("--seed", type=int, default=0, help="data split and dense checkpoint")
    parser.add_argument("--finetune-seeds", type=int, nargs="+", default=None,
                        help="seeds of pruning, fine-tune subset and batches (default: --seed)")
    parser.add_argument("--speedups", type=float, nargs="+", default=[4, 8, 2])
    parser.add_argument("--methods", nargs="+", default=None, choices=list(METHODS),
                        help="default: every method but the meta ones and output_group_l2_ft")
    parser.add_argument("--finetune-images", type=int, default=10000,
                        help="size of the fixed, seeded training subset every method fine-tunes on")
    parser.add_argument("--finetune-epochs", type=int, default=1)
    parser.add_argument("--metanet", default=None,
                        help="metanetwork for the meta methods (metanet.safetensors or its meta-training folder)")
    parser.add_argument("--meta-finetune-images", type=int, default=10000,
                        help="images of the 1-epoch fine-tune before pruning (meta, output_group_l2_ft)")
    parser.add_argument("--resume", action="store_true", help="keep and skip the runs already in results/<name>.json")
    parser.add_argument("--baselines-from", default=None, metavar="NAME",
                        help="copy the runs of results/NAME.json (same fine-tune) of methods not run here into the table")
    parser.add_argument("--quick", action="store_true", help="a few hundred images, 4x, two methods: a smoke run")
    parser.add_argument("--name", default=None, help="results/<name>.{json,md,png} (default cifar10, or cifar10_quick)")
    args = parser.parse_args()
    quick_methods = ["group_l2", "tp_group_norm"] if args.methods is None else args.methods
    if args.methods is None:
        args.methods = [method for method in METHODS if method not in META_METHODS | PRE_FINETUNED]
    if META_METHODS & set(args.methods) and not args.metanet:
        raise SystemExit(f"error: {', '.join(sorted(META_METHODS & set(args.methods)))} need --metanet PATH "
                         "(a metanetwork meta-trained on CIFAR-10: metaprune meta train --data cifar10-jpeg)")
    if args.metanet and not Path(args.metanet).exists():
        raise SystemExit(f"error: --metanet {args.metanet} does not exist")
    torch.set_num_threads(1)
    splits = load_dataset("cifar10-jpeg", root=args.data_root, image_size=32, seed=args.seed)
    if args.quick:
        args.speedups, args.methods, args.finetune_images = [4], quick_methods, 256
        args.meta_finetune_images = min(args.meta_finetune_images, 256)
        splits.train, splits.val, splits.test = (subset(splits.train, 512, 1), subset(splits.val, 256, 2),
                                                 subset(splits.test, 512, 3))
    finetune_seeds = args.finetune_seeds or [args.seed]
    loaders = make_loaders(splits, batch_size=RECIPE["batch_size"], seed=args.seed)
    finetune_splits = {seed: finetune_split(splits, args.finetune_images, seed) for seed in finetune_seeds}
    pre_finetune_splits = {seed: finetune_split(splits, min(args.meta_finetune_images, len(splits.train)), seed + 100)
                           for seed in finetune_seeds}
    dense, dense_source = load_dense(args, splits, loaders)
    name = args.name or ("cifar10_quick" if args.quick else "cifar10")
    result: dict[str, Any] = {
        "machine": machine(), "dense_checkpoint": dense_source, "dense": accuracy(dense, loaders),
        "finetune_images": args.finetune_images, "finetune_epochs": args.finetune_epochs,
        "finetune_recipe": {"optimizer": "sgd (momentum 0.9, nesterov)", "lr": FINETUNE_LR, "schedule": "cosine",
                            "weight_decay": RECIPE["weight_decay"], "batch_size": RECIPE["batch_size"]},
        "seed": args.seed, "finetune_seeds": finetune_seeds, "methods": {method: METHODS[method] for method in args.methods}, "runs": [],
        "anchors": ANCHORS,
        "command": "OMP_NUM_THREADS=1 python benchmarks/cifar10.py " + " ".join(sys.argv[1:]),
    }
    if args.resume and (RESULTS / f"{name}.json").is_file():
        result["runs"] = [run for run in json.loads((RESULTS / f"{name}.json").read_text())["runs"]
                          if not run.get("copied_from")
                          and (run["method"] not in META_METHODS or run.get("metanet") == args.metanet)]
    if args.baselines_from:
        result["runs"] += copied_runs(args.baselines_from, result, set(args.methods))
    print(f"dense: val {result['dense']['val']:.4f} test {result['dense']['test']:.4f}", flush=True)
    for speedup, seed, method in itertools.product(args.speedups, finetune_seeds, args.methods):
        if any(run["speedup_target"] == speedup and run["finetune_seed"] == seed and run["method"] == method
               for run in result["runs"]):
            continue
        run = run_method(method, speedup, dense, splits, finetune_splits[seed], args.finetune_epochs, seed,
                         metanet=args.metanet, pre_finetune_splits=pre_finetune_splits[seed])
        if method in META_METHODS:
            run["metanet"] = args.metanet
        result["runs"].append(run)
        print(f"{speedup:g}x seed {seed} {method:16s} flops {1 / run['flops_ratio']:.2f}x before {run['before_finetune']['test']:.4f} "
              f"after val {run['after_finetune']['val']:.4f} test {run['after_finetune']['test']:.4f} "
              f"({run['seconds']:.0f} s)", flush=True)
        write_result_files(result, name, table, plot)
    print(table(result))


if __name__ == "__main__":
    main()
