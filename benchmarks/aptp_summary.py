"""Mean ± std over seeds of ``benchmarks/aptp.py`` results, one Markdown table per variant.

    python benchmarks/aptp_summary.py "plain=benchmarks/results/aptp.json,benchmarks/results/aptp_seed*.json" \\
        "guided=benchmarks/results/aptp_guided4*.json"
"""

from __future__ import annotations

import argparse
import glob
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import markdown_table, mean_std  # noqa: E402

MODELS = {"teacher": "dense teacher", "aptp": "APTP, routed experts", "static_magnitude": "static, magnitude",
          "static_group_l2": "static, group L2"}


def summarize(paths: list[str]) -> str:
    """The Markdown table (and a line of per-run wins) of the result files ``paths``."""
    runs = [json.loads(Path(path).read_text()) for path in paths]
    rows = []
    for key, label in MODELS.items():
        records = [run[key] for run in runs]
        by_difficulty = " / ".join(mean_std([r["accuracy_by_difficulty"][d] for r in records], scale=1.0, digits=2)
                                   for d in records[0]["accuracy_by_difficulty"])
        rows.append([label, mean_std([r["accuracy"] for r in records], scale=1.0, digits=3), by_difficulty,
                     mean_std([r["fd"] for r in records], scale=1.0, digits=2),
                     mean_std([r["mac_ratio"] for r in records], scale=1.0, digits=3)])
    wins = {metric: sum(run["routed_beats_static"][metric] for run in runs) for metric in ("accuracy", "fd")}
    header = ["model", "accuracy", "single / attribute / two-digit", "FD ↓", "MAC ratio"]
    note = (f"{len(runs)} runs (seeds {[run['config']['seed'] for run in runs]}); routed beats both static UNets on "
            f"accuracy in {wins['accuracy']}, on FD in {wins['fd']}")
    return markdown_table(header, rows) + "\n\n" + note


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("groups", nargs="+", help="NAME=GLOB[,GLOB...] of result files")
    args = parser.parse_args()
    for group in args.groups:
        name, _, patterns = group.partition("=")
        paths = sorted({path for pattern in patterns.split(",") for path in glob.glob(pattern)})
        if not paths:
            raise SystemExit(f"no result files match {patterns!r}")
        print(f"### {name}\n\n{summarize(paths)}\n")


if __name__ == "__main__":
    main()
