"""The ``report.json`` of a saved prompt-routed pipeline, in the run-report schema the zoo publishes.

A pipeline folder is a run directory (:mod:`metaprune.rundir`); its report uses the keys of a
pruning run's report, so ``metaprune zoo publish`` reads it like any other. The "pruned" side
is the routed model as used: FLOPs are twice the usage-weighted average MACs of one UNet call, parameters the usage-weighted average expert size, and the quality
figures come from ``benchmarks/aptp.py`` (classifier accuracy for the prompt, Fréchet
distance). ``layer_keep_ratios`` holds the MAC ratio of each expert, which the card charts.

    python benchmarks/aptp.py --out runs/dd-aptp          # measures and writes runs/dd-aptp/report.json
    metaprune zoo publish runs/dd-aptp --to my-zoo --name digits-aptp --task text-to-image
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from metaprune.diffusion.pipeline import PipelineConfig
from metaprune.errors import ConfigError, WeightsError
from metaprune.rundir import PIPELINE_CONFIG_FILE, REPORT_FILE, write_json
from metaprune.schemas import parse_file
from metaprune.version import __version__

COMMAND = ("metaprune diffusion teacher --out runs/dd-teacher && metaprune diffusion prune --teacher runs/dd-teacher "
           "--budget {budget:g} --codes {codes} --seed {seed} --out runs/dd-aptp")
_QUALITY = ("accuracy", "fd", "latency_ms")


def pipeline_report(folder: str | Path, results: dict[str, Any]) -> dict[str, Any]:
    """The zoo report of the pipeline saved in ``folder``, from ``benchmarks/aptp.py`` (or ``build_zoo.py``) results.

    ``results`` may also give the reproducing ``command`` (default: the standard recipe), ``card_notes``
    (lines the model card shows) and ``precision`` (stored-precision checks), which are kept.

    Raises:
        ConfigError: ``results`` lacks the teacher or APTP figures, or does not match the pipeline.
    """
    config = parse_file(PipelineConfig, Path(folder) / PIPELINE_CONFIG_FILE, WeightsError)
    missing = [key for key in ("teacher", "aptp", "dense_macs", "budget") if key not in results]
    if missing:
        raise ConfigError(f"benchmark results lack {missing}: run benchmarks/aptp.py on this pipeline")
    aptp, teacher = results["aptp"], results["teacher"]
    experts = aptp.get("experts", [])
    if len(experts) != len(config.gates):
        raise ConfigError(f"results describe {len(experts)} experts but {folder} holds {len(config.gates)}")
    usage = aptp["usage"]
    dense_params = sum(p.numel() for p in config.unet.build().parameters())
    settings = results.get("config", {})
    return {
        "model": "unet2d-condition", "dataset": "digits-prompts", "pattern": "prompt-routed", "criterion": "aptp",
        "schedule": "two-stage", "budget": {"flops_ratio": results["budget"]},
        "dense": {"flops": 2 * results["dense_macs"], "params": dense_params, "test_accuracy": teacher["accuracy"],
                  **{key: teacher[key] for key in _QUALITY[1:] if key in teacher}},
        "pruned": {"flops": round(2 * results["dense_macs"] * aptp["mac_ratio"]),
                   "params": round(sum(share * expert["params"] for share, expert in zip(usage, experts))),
                   "test_accuracy": aptp["accuracy"], **{key: aptp[key] for key in _QUALITY[1:] if key in aptp}},
        "speedup": {"flops": 1 / aptp["mac_ratio"],
                    **({"latency": teacher["latency_ms"] / aptp["latency_ms"]}
                       if teacher.get("latency_ms") and aptp.get("latency_ms") else {})},
        "layer_keep_ratios": {f"expert {expert['code']}": expert["mac_ratio"] for expert in experts},
        "command": results.get("command") or COMMAND.format(budget=results["budget"], codes=len(experts),
                                                            seed=settings.get("seed", 0)),
        "seed": settings.get("seed", 0), "wall_time_s": results.get("timings_s", {}).get("aptp_train_s", float("nan")),
        "metaprune_version": __version__,
        **{key: results[key] for key in ("card_notes", "precision") if key in results},
    }


def write_pipeline_report(folder: str | Path, results: dict[str, Any]) -> Path:
    """Write :func:`pipeline_report` to ``folder/report.json`` (atomically); returns its path."""
    return write_json(Path(folder) / REPORT_FILE, pipeline_report(folder, results), indent=1)
