"""Benchmark: the metanetwork criterion against group L2, Taylor and random on digits ResNet-20.

``output_group_l2`` is the ablation "meta without the rewrite": the same ranking rule on the
original weights, so the table separates what the metanetwork adds from what the rule adds.

2x, 4x and 8x FLOPs speed-up, several seeds, the same one-shot schedule and fine-tune budget
for every criterion (the metanetwork rewrite and BatchNorm re-estimation add no gradient
steps). The data split is fixed to the one the metanetwork's population was trained on, so
no test image was ever seen by meta-training; seeds vary the dense network and the pruning.
Writes ``results/meta_vs_baselines.json`` / ``.png`` and prints a Markdown table with test
accuracy right after pruning and after fine-tuning.

    python train_meta.py population --out runs/meta-population
    python train_meta.py train --population runs/meta-population --out runs/meta
    python benchmarks/meta_vs_baselines.py --metanet runs/meta
    python benchmarks/meta_vs_baselines.py --plot-only   # redraw the PNG from results/meta_vs_baselines.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, mean_std, write_json  # noqa: E402
from criteria import plot, run, table  # noqa: E402

CRITERIA = ["meta", "output_group_l2", "group_l2", "taylor", "random"]  # output_group_l2: meta without the rewrite


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--metanet", help="metanet.safetensors or its meta-training directory (needed unless --plot-only)")
    parser.add_argument("--plot-only", action="store_true",
                        help="redraw the PNG and table from the results JSON without running anything")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--speedups", type=float, nargs="+", default=[2, 4, 8])
    parser.add_argument("--epochs", type=int, default=12, help="dense training epochs")
    parser.add_argument("--finetune-epochs", type=int, default=4)
    parser.add_argument("--split-seed", type=int, default=0, help="data split of the metanetwork's population")
    parser.add_argument("--quick", action="store_true", help="1 seed, 8x only")
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.speedups = [0], [8]
    name = "meta_vs_baselines_quick" if args.quick else "meta_vs_baselines"
    if args.plot_only:
        result = json.loads((RESULTS / f"{name}.json").read_text())
        speedups = sorted({run["speedup"] for run in result["runs"]})
        plot(result, speedups, CRITERIA, RESULTS / f"{name}.png")
        print(table(result, speedups, CRITERIA))
        return
    if args.metanet is None:
        parser.error("--metanet is required (or --plot-only)")
    torch.set_num_threads(2)
    result = run(args.seeds, args.speedups, CRITERIA, args.epochs, args.finetune_epochs, metanet=args.metanet,
                 split_seed=args.split_seed)
    meta_report = Path(args.metanet) / "meta_report.json"
    if meta_report.is_file():
        result["meta_training"] = json.loads(meta_report.read_text())
    print(f"wrote {write_json(name, result)}")
    plot(result, args.speedups, CRITERIA, RESULTS / f"{name}.png")
    dense = result["dense"]
    print(f"dense ResNet-20: test accuracy {mean_std(d['test_accuracy'] for d in dense)} %, "
          f"trained in {statistics.mean(d['train_seconds'] for d in dense):.1f} s")
    print(table(result, args.speedups, CRITERIA))


if __name__ == "__main__":
    main()
