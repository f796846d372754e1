"""Build the default zoo entries from our own pipeline on the embedded digits data.

ResNet-20, VGG-11 (width 0.125) and the tiny ViT, each at 2x/4x/8x structured (channels; heads
too for the ViT), 50% and 90% unstructured, and 2:4. Each entry is a real ``run_prune`` run
whose report records the ``metaprune prune`` command that reproduces it (same seed, same
dense training), published with ``metaprune.zoo.publish``.

    python benchmarks/build_zoo.py --to zoo --subfolder entries --max-mb 1.2   # the packaged entries
    python benchmarks/build_zoo.py --to ~/metaprune-zoo                         # every entry, locally
    METAPRUNE_INDEX=~/metaprune-zoo/index.json metaprune zoo list

Entries whose files exceed ``--max-mb`` are built but not published (so the package stays small);
build them locally with the second command.
"""

from __future__ import annotations

import argparse
import shlex
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from metaprune.data import load_digits_splits
from metaprune.prune.budget import Budget
from metaprune.prune.spec import PruningSpec
from metaprune.specs import TaskSpec, TrainingSpec
from metaprune.workflows.prune import PruneOptions, run_prune, train_dense
from metaprune.zoo import publish


@dataclass(frozen=True)
class Recipe:
    """One zoo entry: what to prune and how."""

    model: str
    tag: str
    pattern: str
    flops_ratio: float
    criterion: str = "group_l2"
    model_kwargs: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.model}-digits-{self.pattern.replace(':', '')}-{self.tag}"

    def command(self, epochs: int, finetune_epochs: int, seed: int) -> str:
        width = ["--width", str(self.model_kwargs["width"])] if "width" in self.model_kwargs else []
        args = ["prune", "--model", self.model, *width, "--budget", f"{self.flops_ratio:g}", "--pattern", self.pattern,
                "--criterion", self.criterion, "--epochs", str(epochs), "--finetune-epochs", str(finetune_epochs),
                "--seed", str(seed), "--out", f"runs/{self.name}"]
        return "metaprune " + shlex.join(args)


MODELS = {"resnet20": {}, "vgg11": {"width": 0.125}, "vit_tiny": {}}  # VGG-11 narrowed so every entry stays < 1 MB


def recipes(models: list[str]) -> list[Recipe]:
    """The 6 entries per model: 2x/4x/8x channel, 50%/90% unstructured, 2:4."""
    out = []
    for model in models:
        kwargs = MODELS[model]
        out += [Recipe(model, f"{speedup}x", "channel", 1 / speedup, model_kwargs=kwargs) for speedup in (2, 4, 8)]
        out += [Recipe(model, f"s{sparsity}", "unstructured", 1 - sparsity / 100, "l1", kwargs) for sparsity in (50, 90)]
        out.append(Recipe(model, "2of4", "n:m", 1.0, "l1", kwargs))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--to", default="zoo", help="zoo folder holding index.json")
    parser.add_argument("--subfolder", default="", help="entries go to TO/SUBFOLDER/NAME (the package uses 'entries')")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--max-mb", type=float, default=None, help="skip publishing entries larger than this")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--finetune-epochs", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(2)
    splits = load_digits_splits(image_size=16, seed=args.seed)
    dense_models: dict[str, torch.nn.Module] = {}
    with tempfile.TemporaryDirectory() as scratch:
        for recipe in recipes(args.models):
            options = PruneOptions(
                Budget.from_ratio(recipe.flops_ratio),
                task=TaskSpec(model=recipe.model, model_kwargs=dict(recipe.model_kwargs), seed=args.seed),
                training=TrainingSpec.dense(args.epochs), finetune=TrainingSpec.finetune(args.finetune_epochs),
                pruning=PruningSpec(pattern=recipe.pattern, criterion=recipe.criterion),
                out=str(Path(scratch) / recipe.name),
                command=recipe.command(args.epochs, args.finetune_epochs, args.seed),
            )
            if recipe.model not in dense_models:  # the CLI command retrains it identically (same seed)
                dense_models[recipe.model] = train_dense(options.task, options.training, splits, progress=False)
            result = run_prune(options, splits=splits, dense_model=dense_models[recipe.model], progress=False)
            size_mb = sum(path.stat().st_size for path in result.run_dir.iterdir()) / 2**20
            report = result.report
            line = (f"{recipe.name:32s} FLOPs {report.speedup['flops']:.2f}x  test {report.dense.test_accuracy:.4f}"
                    f" -> {report.pruned.test_accuracy:.4f}  {size_mb:.2f} MB")
            if args.max_mb is not None and size_mb > args.max_mb:
                print(line, "(not published: larger than --max-mb)", flush=True)
                continue
            publish(result.run_dir, args.to, recipe.name, subfolder=args.subfolder)
            print(line, flush=True)


if __name__ == "__main__":
    main()
