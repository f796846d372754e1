"""How long the command line takes to answer when it has nothing heavy to do.

Each command runs as a whole process (the installed ``metaprune`` script), once to warm the
file cache, then ``--runs`` times; the table gives the median, min and max wall time, the CPU
seconds and the peak resident memory of each (from ``wait4``). The commands: the main help, a sub-command's
help, and two refusals (a misspelt model name, a budget out of range) that must not wait for torch.

    OMP_NUM_THREADS=1 python benchmarks/cli_startup.py            # results/cli_startup.json
    OMP_NUM_THREADS=1 python benchmarks/cli_startup.py --runs 15
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
COMMANDS = {
    "metaprune --help": ["--help"],
    "metaprune prune --help": ["prune", "--help"],
    "refused: --model nosuchmodel": ["prune", "--model", "nosuchmodel", "--budget", "0.5"],
    "refused: --budget 7": ["prune", "--budget", "7"],
}
#: What the command line promises for these (README "Feedback and start-up").
TARGET_S = 1.5


def metaprune_command() -> list[str]:
    """The installed ``metaprune`` script beside this interpreter, else ``python -m metaprune.cli``."""
    script = Path(sys.executable).with_name("metaprune")
    if script.is_file():
        return [str(script)]
    found = shutil.which("metaprune")
    return [found] if found else [sys.executable, "-m", "metaprune.cli"]


def run_once(argv: list[str], env: dict[str, str]) -> tuple[float, float, float, int]:
    """Wall seconds, CPU seconds (user + system), peak resident MiB and exit status of one run of ``argv``."""
    start = time.perf_counter()
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    return seconds, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, process.returncode


def measure(argv: list[str], runs: int, env: dict[str, str]) -> dict[str, float | int]:
    """Median/min/max wall seconds, median CPU seconds and peak MiB over ``runs`` runs after one warm-up.

    On a shared machine the wall time grows with the load; the CPU seconds hardly do."""
    run_once(argv, env)
    samples = [run_once(argv, env) for _ in range(runs)]
    seconds = [sample[0] for sample in samples]
    return {"median_s": statistics.median(seconds), "min_s": min(seconds), "max_s": max(seconds),
            "cpu_s": statistics.median(sample[1] for sample in samples),
            "peak_mib": statistics.median(sample[2] for sample in samples), "exit_code": samples[-1][3]}


def machine(threads: str) -> dict[str, object]:
    """Where the figures were measured (``threads``: OMP_NUM_THREADS given to the commands)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(), "cpus_available": cpus, "omp_num_threads": threads,
            "date": time.strftime("%Y-%m-%d")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="Counted runs per command (median of these).")
    parser.add_argument("--out", default=str(RESULTS / "cli_startup.json"), help="JSON file for the figures.")
    args = parser.parse_args()
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    base = metaprune_command()
    results = {label: measure(base + argv, args.runs, env) for label, argv in COMMANDS.items()}
    info = machine(env["OMP_NUM_THREADS"])
    info["load_average"] = round(os.getloadavg()[0], 1) if hasattr(os, "getloadavg") else None
    print(f"{info['platform']}, {info['cpus_available']} CPUs available, OMP_NUM_THREADS={info['omp_num_threads']}, "
          f"Python {info['python']}, load average {info['load_average']}; median of {args.runs} runs after one warm-up")
    print(f"{'command':34s} {'median s':>9s} {'min s':>7s} {'max s':>7s} {'cpu s':>7s} {'peak MiB':>9s} {'exit':>5s}")
    for label, figures in results.items():
        print(f"{label:34s} {figures['median_s']:9.3f} {figures['min_s']:7.3f} {figures['max_s']:7.3f} "
              f"{figures['cpu_s']:7.3f} {figures['peak_mib']:9.1f} {figures['exit_code']:5d}")
    slow = [label for label, figures in results.items() if figures["median_s"] > TARGET_S]
    print(f"all medians under {TARGET_S} s" if not slow else f"over {TARGET_S} s: {', '.join(slow)}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"machine": info, "runs": args.runs, "commands": {
        label: {"argv": ["metaprune", *COMMANDS[label]], **figures} for label, figures in results.items()}},
        indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
