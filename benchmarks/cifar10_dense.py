"""Train the dense CIFAR-10 ResNet-20 that ``benchmarks/cifar10.py`` prunes, and save it under ``checkpoints/``.

The recipe is metaprune's own dense training (:func:`metaprune.train.fit`, as in
``metaprune.workflows.prune.train_dense``): SGD with Nesterov momentum 0.9, learning rate 0.1
at batch 128 with a cosine schedule to zero, weight decay 5e-4, cross-entropy; the data set
``cifar10-jpeg`` (45,000 train / 5,000 validation from the training tree, seed 0; 10,000 test)
with pad-4 random crops and horizontal flips. The last epoch's model is kept (a fixed
schedule; validation accuracy is logged every epoch), test accuracy is measured once at the end.

    OMP_NUM_THREADS=1 python benchmarks/cifar10_dense.py --epochs 15      # ~1 h on one busy core

Writes ``checkpoints/resnet20_cifar10_seed<seed>.safetensors`` and ``.json`` (command, epochs,
seed, per-epoch validation accuracy, test accuracy, wall time).

The dense control of a pruning run (the dense model given the same extra epochs as the pruned
one's fine-tune) starts from a checkpoint with the fine-tune's learning rate and writes elsewhere:

    python benchmarks/cifar10_dense.py --model resnet56 --init checkpoints/resnet56_cifar10_seed0.safetensors \
        --epochs 4 --lr 0.01 --out runs/r56-control/dense_control.safetensors
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cifar10_input import DEFAULT_ROOT  # noqa: E402
from common import machine  # noqa: E402

from metaprune.rundir import write_json  # noqa: E402
from metaprune.specs import TaskSpec, TrainingSpec  # noqa: E402
from metaprune.train import evaluate, fit, save_state, seed_everything  # noqa: E402

CHECKPOINTS = Path(__file__).resolve().parent / "checkpoints"
RECIPE = {"optimizer": "sgd (momentum 0.9, nesterov)", "lr": 0.1, "batch_size": 128, "weight_decay": 5e-4,
          "schedule": "cosine to 0, no warm-up", "augmentation": "pad 4 + random 32x32 crop + horizontal flip",
          "loss": "cross-entropy"}


def checkpoint_path(model: str, seed: int) -> Path:
    """Where the dense ``model`` of ``seed`` is kept."""
    return CHECKPOINTS / f"{model}_cifar10_seed{seed}.safetensors"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", default=str(DEFAULT_ROOT))
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--limit", type=int, default=None, help="train on the first N images only (a smoke run)")
    parser.add_argument("--init", default=None, help="start from these weights (safetensors) instead of scratch")
    parser.add_argument("--lr", type=float, default=RECIPE["lr"], help="peak learning rate of the cosine schedule")
    parser.add_argument("--out", default=None, help="weights file to write (default checkpoints/<model>_cifar10_seed<seed>)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    task = TaskSpec(model=args.model, data="cifar10-jpeg", data_root=args.data_root, image_size=32, seed=args.seed)
    if args.lr <= 0 or args.epochs < 1:
        parser.error(f"need --lr > 0 and --epochs >= 1, got {args.lr} and {args.epochs}")
    training = TrainingSpec.dense(args.epochs, lr=args.lr, batch_size=RECIPE["batch_size"], optimizer="sgd")
    splits = task.load_splits()
    if args.limit:
        splits.train.images, splits.train.labels = splits.train.images[:args.limit], splits.train.labels[:args.limit]
    seed_everything(task.seed)
    model = task.load_model(args.init, splits) if args.init else task.build_model(splits)
    from metaprune.data import make_loaders

    train_loader, val_loader, test_loader = make_loaders(splits, batch_size=training.batch_size, seed=task.seed)
    start = time.perf_counter()
    steps_per_epoch = len(train_loader)

    def log(network: torch.nn.Module, step: int, total_steps: int) -> None:
        if step % 50 == 0 or step == total_steps:
            elapsed = time.perf_counter() - start
            print(f"step {step}/{total_steps} (epoch {step / steps_per_epoch:.2f}) {elapsed:.0f} s, "
                  f"{step * training.batch_size / elapsed:.0f} images/s", flush=True)

    result = fit(model, train_loader, epochs=training.epochs, lr=training.lr_for(task.model), optimizer="sgd",
                 weight_decay=RECIPE["weight_decay"], val_loader=val_loader, on_step=log, progress=False)
    print("val accuracy per epoch:", [round(value, 4) for value in result.val_accuracy], flush=True)
    test_accuracy = evaluate(model, test_loader)
    path = Path(args.out) if args.out else checkpoint_path(args.model, args.seed)
    if args.limit:
        path = path.with_name(f"smoke_{path.name}")
    path.parent.mkdir(parents=True, exist_ok=True)
    save_state(path, model, {"model": args.model, "seed": args.seed, "data": "cifar10-jpeg", "epochs": args.epochs,
                             "test_accuracy": test_accuracy})
    record = {
        "command": f"OMP_NUM_THREADS={args.threads} python benchmarks/cifar10_dense.py --model {args.model} "
                   f"--epochs {args.epochs} --seed {args.seed} --threads {args.threads}"
                   + (f" --init {args.init}" if args.init else "") + (f" --lr {args.lr}" if args.lr != RECIPE["lr"] else "")
                   + (f" --out {args.out}" if args.out else ""),
        "model": args.model, "data": "cifar10-jpeg (45,000 train / 5,000 val from train, seed 0; 10,000 test)",
        "epochs": args.epochs, "seed": args.seed, "recipe": {**RECIPE, "lr": args.lr}, "init": args.init, "train_loss": result.train_loss,
        "val_accuracy": result.val_accuracy, "final_val_accuracy": result.val_accuracy[-1],
        "test_accuracy": test_accuracy, "train_seconds": result.wall_time_s, "machine": machine(),
        "weights": path.name,
    }
    write_json(path.with_suffix(".json"), record)
    print(f"test accuracy {100 * test_accuracy:.2f} %, val {100 * result.val_accuracy[-1]:.2f} %, "
          f"{result.wall_time_s / 60:.1f} min; wrote {path}", flush=True)


if __name__ == "__main__":
    main()
