"""MiniLM-L6 on STS-B: the mask variants tried for issue 17, scored on dev (for selection) and test.

Each config prunes a fresh copy of all-MiniLM-L6-v2 with one layer-wise method and
:class:`~metaprune.prune.layerwise.LayerwiseOptions` (allocation, dense targets, bias correction,
method keywords), on the first ``calibration`` sentences of the seeded STS-B train shuffle, and
appends a row to ``results/minilm_stsb_selection.{json,md}``: dev and test Spearman x100, pruning
seconds, the 1-minute load average, the reached overall sparsity and the per-block sparsity.

    python benchmarks/minilm_stsb_selection.py --configs '[{"method": "sparsegpt", "target": "70%", "dense": true}]'

Config keys: ``method``, ``target`` (``70%`` or ``2:4``), ``calibration`` (256), ``allocation``
(``uniform``), ``aopts`` (AllocationOptions keywords), ``mopts`` (method keywords), ``dense``,
``bias`` (booleans).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import random
import time
from pathlib import Path
from typing import Any

import torch
from common import RESULTS, markdown_table, write_json

DEFAULT_ROOT = Path(__file__).resolve().parents[2] / "shared" / "data" / "stsb"
NAME = "minilm_stsb_selection"


def run_config(config: dict[str, Any], base: Any, splits: Any, pool: list[str]) -> dict[str, Any]:
    from metaprune.data.stsb import sts_spearman
    from metaprune.prune.allocation import AllocationOptions
    from metaprune.prune.layerwise import LayerwiseOptions, SparsityTarget, prune_blocks, reached_sparsity
    from metaprune.workflows.text import tokenized_batches

    label = config["target"]
    target = (SparsityTarget(n_m=tuple(int(x) for x in label.split(":"))) if ":" in label
              else SparsityTarget(sparsity=int(label.rstrip("%")) / 100))
    options = LayerwiseOptions(allocation=config.get("allocation", "uniform"),
                               allocation_options=AllocationOptions(**config.get("aopts", {})),
                               method_options=config.get("mopts", {}), dense_targets=config.get("dense", False),
                               bias_correction=config.get("bias", False))
    encoder = copy.copy(base)
    encoder.model = copy.deepcopy(base.model)
    start = time.perf_counter()
    reports = prune_blocks(encoder.model, encoder.model.encoder.layer,
                           tokenized_batches(encoder, pool[:config.get("calibration", 256)]), config["method"], target,
                           options=options)
    seconds = time.perf_counter() - start
    blocks: dict[str, list[float]] = {}
    for report in reports:
        blocks.setdefault(report.name.split(".")[0], []).append(report.sparsity)
    return {**config, "dev": round(sts_spearman(encoder.encode, splits.dev), 2),
            "test": round(sts_spearman(encoder.encode, splits.test), 2), "secs": round(seconds, 1),
            "reached": round(reached_sparsity(reports), 4),
            "block_sparsity": [round(sum(values) / len(values), 3) for values in blocks.values()],
            "load": round(os.getloadavg()[0], 2)}


def write_markdown(rows: list[dict[str, Any]]) -> None:
    def describe(row: dict[str, Any]) -> str:
        parts = [row["method"], row["target"]]
        if row.get("allocation", "uniform") != "uniform":
            from metaprune.prune.allocation import AllocationOptions

            allocation = AllocationOptions(**row.get("aopts", {}))
            parts.append(f"{row['allocation']} λ={allocation.strength} M={allocation.threshold:g}")
        parts += [name for key, name in (("dense", "dense targets"), ("bias", "bias correction")) if row.get(key)]
        parts += [f"{key}={value}" for key, value in row.get("mopts", {}).items()]
        parts.append(f"{row.get('calibration', 256)} sentences")
        return ", ".join(parts)

    table = [[describe(row), f"{row['dev']:.2f}", f"{row['test']:.2f}", f"{row['secs']:.0f}", f"{row['load']:.1f}"]
             for row in rows]
    (RESULTS / f"{NAME}.md").write_text(
        "# MiniLM-L6 on STS-B: mask variants (dev for selection)\n\n"
        + markdown_table(["config", "dev Spearman", "test Spearman", "prune s", "load (1 min)"], table)
        + "\n\nDense: dev 86.72, test 82.03. 1 thread, nice 5, on a shared 2-core machine.\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", required=True, help="a JSON list of configs (see the module docstring)")
    parser.add_argument("--data-root", type=Path, default=DEFAULT_ROOT)
    args = parser.parse_args()
    torch.set_num_threads(1)
    from metaprune.data.stsb import load_stsb
    from metaprune.models.minilm import load_minilm
    from metaprune.prune import sparsegpt, wanda  # noqa: F401  (registers the methods)

    splits = load_stsb(args.data_root)
    base = load_minilm()
    pool = splits.train.sentences()
    random.Random(0).shuffle(pool)
    previous = RESULTS / f"{NAME}.json"
    rows = json.loads(previous.read_text())["rows"] if previous.is_file() else []
    for config in json.loads(args.configs):
        rows.append(run_config(config, base, splits, pool))
        print(json.dumps(rows[-1]), flush=True)
        write_json(NAME, {"rows": rows})
        write_markdown(rows)


if __name__ == "__main__":
    main()
