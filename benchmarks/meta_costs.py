"""Benchmark: what the metanetwork costs on this CPU.

Times (median of repeats after a warm-up) the metanetwork forward that rewrites a dense
network, graph encoding and decoding included, for ResNet-20 at widths 1 and 2 (about 0.27M
and 1.1M parameters), VGG-11 at width 0.5 and the MLP; and reports how long the meta-training
run in ``--metanet`` took (from its ``meta_report.json``). Writes ``results/meta_costs.json``.

    python benchmarks/meta_costs.py --metanet runs/meta
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import markdown_table, write_json  # noqa: E402

from metaprune.meta.rewrite import rewrite_network  # noqa: E402
from metaprune.meta.training import load_metanet  # noqa: E402
from metaprune.models import create_model  # noqa: E402

NETWORKS = [("resnet20", {"width": 1.0}), ("resnet20", {"width": 2.0}), ("vgg11", {"width": 0.5}), ("mlp", {})]


def time_rewrite(metanet, name: str, kwargs: dict, repeats: int) -> dict:
    """Median wall time of ``rewrite_network`` on a freshly built ``name`` network."""
    model = create_model(name, num_classes=10, in_channels=1, image_size=16, **kwargs).eval()
    example = torch.zeros(1, 1, 16, 16)
    rewrite_network(metanet, model, example)  # warm-up
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        rewrite_network(metanet, model, example)
        seconds.append(time.perf_counter() - start)
    return {"network": name, **kwargs, "parameters": sum(p.numel() for p in model.parameters()),
            "rewrite_s": statistics.median(seconds)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--metanet", required=True, help="metanet.safetensors or its meta-training directory")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    metanet = load_metanet(args.metanet)
    rows = [time_rewrite(metanet, name, kwargs, args.repeats) for name, kwargs in NETWORKS]
    report = Path(args.metanet) / "meta_report.json"
    training_s = sum(json.loads(report.read_text())["history"]["epoch_seconds"]) if report.is_file() else None
    print(f"wrote {write_json('meta_costs', {'rewrite': rows, 'meta_training_s': training_s})}")
    print(markdown_table(["network", "parameters", "metanetwork rewrite (s)"],
                         [[f"{r['network']} {r.get('width', '')}".strip(), f"{r['parameters']:,}", f"{r['rewrite_s']:.2f}"]
                          for r in rows]))
    if training_s is not None:
        print(f"meta-training ({args.metanet}): {training_s / 60:.1f} min")


if __name__ == "__main__":
    main()
