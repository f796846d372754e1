"""Benchmark: the CIFAR-10 input path and ResNet-20 training speed on this CPU.

Measures (1) decoding the JPEG tree without the cache, (2) loading it from the uint8 cache,
(3) the batch loader alone (gather + pad/crop/flip + normalise), and (4) training images/s of
ResNet-20 (batch 128, SGD step included) at 1 and 2 threads, with contiguous and channels-last
memory (model and batches). Writes ``results/cifar10_input.json`` and prints a Markdown table.

    python benchmarks/cifar10_input.py [--data-root ../shared/data/cifar10-jpeg] [--steps 20]

The figures depend on what else runs on the machine: the JSON records the date and threads.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import markdown_table, write_json  # noqa: E402

from metaprune.data import load_cifar10_folder, make_loaders  # noqa: E402
from metaprune.models import create_model  # noqa: E402

DEFAULT_ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cifar10-jpeg"


def timed(function, *args, **kwargs) -> tuple[object, float]:
    """``function(*args, **kwargs)`` and the seconds it took."""
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - start


def loader_images_per_s(splits, batch_size: int) -> float:
    """Images/s of one pass of the training loader (no model)."""
    train, _, _ = make_loaders(splits, batch_size=batch_size, seed=0)
    start = time.perf_counter()
    count = sum(int(labels.numel()) for _, labels in train)
    return count / (time.perf_counter() - start)


def training_images_per_s(splits, threads: int, channels_last: bool, steps: int, batch_size: int) -> float:
    """Images/s of ResNet-20 training steps (forward, backward, SGD) after 3 warm-up steps."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    splits.train.channels_last = channels_last
    model = create_model("resnet20", num_classes=10, in_channels=3, image_size=32)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
    train, _, _ = make_loaders(splits, batch_size=batch_size, seed=0)
    batches = iter(train)
    elapsed, images = 0.0, 0
    for step in range(steps + 3):
        inputs, targets = next(batches)
        start = time.perf_counter()
        loss = F.cross_entropy(model(inputs), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step >= 3:
            elapsed += time.perf_counter() - start
            images += int(targets.numel())
    splits.train.channels_last = False
    return images / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", default=str(DEFAULT_ROOT))
    parser.add_argument("--steps", type=int, default=20, help="timed training steps per setting")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    torch.set_num_threads(1)
    _, decode_s = timed(load_cifar10_folder, args.data_root, cache=False)
    load_cifar10_folder(args.data_root)  # make sure the cache exists
    splits, cached_s = timed(load_cifar10_folder, args.data_root)
    loader_rate = loader_images_per_s(splits, args.batch_size)
    rows, training = [], []
    for threads in args.threads:
        for channels_last in (False, True):
            rate = training_images_per_s(splits, threads, channels_last, args.steps, args.batch_size)
            training.append({"threads": threads, "channels_last": channels_last, "images_per_s": rate,
                             "epoch_s": len(splits.train) / rate})
            rows.append([str(threads), "channels-last" if channels_last else "contiguous", f"{rate:.0f}",
                         f"{len(splits.train) / rate:.0f}"])
            print(rows[-1], flush=True)
    result = {"decode_without_cache_s": decode_s, "load_from_cache_s": cached_s,
              "loader_images_per_s": loader_rate, "batch_size": args.batch_size, "steps": args.steps,
              "train_images": len(splits.train), "training": training,
              "note": "measured on a shared 2-core machine with other jobs running"}
    print(f"wrote {write_json('cifar10_input', result)}")
    print(f"decode 60,000 JPEGs without cache: {decode_s:.1f} s; from the uint8 cache: {cached_s:.1f} s; "
          f"loader alone (augment + normalise): {loader_rate:,.0f} images/s")
    print(markdown_table(["threads", "memory format", "training images/s", "epoch (45k images), s"], rows))


if __name__ == "__main__":
    main()
