"""Benchmark the sparse kernels of ``metaprune.kernels`` against dense and PyTorch sparse baselines.

GPU section (skipped, with a message, when CUDA is absent): fp16 weights of
shape ``[out, in]`` = 4096x4096 and 4096x11008 at batch 1, 8, 64 and 50/70/90%
unstructured sparsity; Triton bitmap SpMM (and the CUDA C++ SpMV at batch 1)
against dense ``torch.matmul`` and, for 2:4 weights, ``to_sparse_semi_structured``
and the Triton N:M kernel. L2 is flushed before every timed run and each call is
captured in a CUDA graph, so launch overhead does not hide microsecond kernels.
Reported: median time, speed-up over dense, and percent of the memory roofline,
``bytes moved / time / peak bandwidth`` (bytes = weight format + x + y).

CPU section: dense ``F.linear`` vs ``torch.sparse`` CSR in fp32 (medians, ratio),
written to ``benchmarks/results/kernels_cpu.json``.

    python benchmarks/kernels.py --section cpu --quick --threads 2
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from metaprune.kernels import BitmapWeight, NMWeight, measure_cpu_backends, prune_to_n_m
from metaprune.kernels.cpu_probe import random_sparse_weight

RESULTS_DIR = Path(__file__).parent / "results"
FULL_SHAPES = ((4096, 4096), (4096, 11008))
QUICK_SHAPES = ((1024, 1024), (1024, 2752))
H100_PEAK_BANDWIDTH = 3.35e12
L2_FLUSH_BYTES = 256 * 2**20


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--section", choices=("cpu", "gpu", "all"), default="all")
    parser.add_argument("--quick", action="store_true", help="CPU: smaller shapes (1024x1024, 1024x2752)")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads for the CPU section")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--sparsities", type=float, nargs="+", default=[0.5, 0.7, 0.9])
    parser.add_argument("--cpu-repeats", type=int, default=5)
    parser.add_argument("--gpu-repeats", type=int, default=50)
    parser.add_argument("--peak-bandwidth", type=float, default=H100_PEAK_BANDWIDTH, help="bytes/s (H100 SXM default)")
    parser.add_argument("--cpu-output", type=Path, default=RESULTS_DIR / "kernels_cpu.json")
    parser.add_argument("--gpu-output", type=Path, default=RESULTS_DIR / "kernels_gpu.json")
    return parser.parse_args(argv)


def cpu_section(args: argparse.Namespace) -> dict:
    """Dense vs CSR medians on CPU for every shape, batch and sparsity."""
    torch.set_num_threads(args.threads)
    rows = []
    for out_features, in_features in QUICK_SHAPES if args.quick else FULL_SHAPES:
        for batch in args.batches:
            for sparsity in args.sparsities:
                timings = measure_cpu_backends(out_features, in_features, sparsity, batch, repeats=args.cpu_repeats)
                rows.append({
                    "out_features": out_features, "in_features": in_features, "batch": batch, "sparsity": sparsity,
                    "dense_ms": timings["dense"] * 1e3, "csr_ms": timings["csr"] * 1e3,
                    "csr_speedup": timings["dense"] / timings["csr"],
                })
                print(f"cpu {out_features}x{in_features} batch {batch:>2} sparsity {sparsity:.0%}: "
                      f"dense {rows[-1]['dense_ms']:8.3f} ms  csr {rows[-1]['csr_ms']:8.3f} ms  "
                      f"csr speed-up {rows[-1]['csr_speedup']:.2f}x")
    return {
        "device": platform.processor() or platform.machine(), "threads": args.threads, "dtype": "float32",
        "torch": torch.__version__, "quick": args.quick, "repeats": args.cpu_repeats, "results": rows,
    }


def cuda_median_ms(run: Callable[[], object], repeats: int) -> float:
    """Median ms of ``run`` replayed from a CUDA graph, flushing L2 before each timed replay."""
    flush = torch.empty(L2_FLUSH_BYTES, dtype=torch.uint8, device="cuda")
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):  # graph capture wants a side stream and a warm-up
        for _ in range(3):
            run()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        run()
    times = []
    for _ in range(repeats):
        flush.zero_()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def gpu_candidates(weight: torch.Tensor, x: torch.Tensor, two_four: bool) -> dict[str, tuple[Callable, int]]:
    """Name → (callable computing ``x W^T``, weight bytes it reads) for one configuration."""
    from metaprune.kernels import bitmap_spmm, bitmap_spmv_cuda, nm_spmm

    candidates = {"dense": (lambda: torch.matmul(x, weight.T), weight.numel() * weight.element_size())}
    if two_four:
        nm_weight = NMWeight.from_dense(weight, 2, 4)
        candidates["nm_triton"] = (lambda: nm_spmm(nm_weight, x), nm_weight.nbytes)
        from torch.sparse import to_sparse_semi_structured

        try:
            semi = to_sparse_semi_structured(weight)
        except (RuntimeError, ValueError) as error:  # needs sm_80+ and a CUTLASS or cuSPARSELt build
            print(f"gpu torch_2:4 unavailable: {error}")
            return candidates
        # The semi-structured kernels need the dense operand's rows in multiples of 16.
        x_padded = F.pad(x, (0, 0, 0, -x.shape[0] % 16))
        semi_bytes = sum(t.numel() * t.element_size() for t in (semi.packed, semi.meta) if t is not None)
        candidates["torch_2:4"] = (lambda: F.linear(x_padded, semi), semi_bytes)
    else:
        bitmap = BitmapWeight.from_dense(weight)
        candidates["bitmap_triton"] = (lambda: bitmap_spmm(bitmap, x), bitmap.nbytes)
        if x.shape[0] == 1:
            candidates["bitmap_cuda"] = (lambda: bitmap_spmv_cuda(bitmap, x), bitmap.nbytes)
    return candidates


def gpu_section(args: argparse.Namespace) -> dict | None:
    """Sparse kernels vs dense on the GPU; ``None`` (after saying so) when there is no CUDA device."""
    if not torch.cuda.is_available():
        print("gpu section skipped: no CUDA device available")
        return None
    rows = []
    patterns = [("unstructured", sparsity) for sparsity in args.sparsities] + [("2:4", 0.5)]
    for out_features, in_features in FULL_SHAPES:
        for batch in args.batches:
            x = torch.randn(batch, in_features, device="cuda", dtype=torch.float16)
            io_bytes = (x.numel() + batch * out_features) * x.element_size()
            for pattern, sparsity in patterns:
                weight = random_sparse_weight(out_features, in_features, sparsity, torch.float16).cuda()
                if pattern == "2:4":
                    weight = prune_to_n_m(weight, 2, 4)
                dense_ms = None
                for name, (run, weight_bytes) in gpu_candidates(weight, x, pattern == "2:4").items():
                    try:
                        ms = cuda_median_ms(run, args.gpu_repeats)
                    except Exception as error:  # a baseline unsupported on this GPU must not end the run
                        print(f"gpu {name} failed: {error}")
                        continue
                    dense_ms = ms if name == "dense" else dense_ms
                    speedup = dense_ms / ms if dense_ms else float("nan")
                    roofline = (weight_bytes + io_bytes) / (ms * 1e-3) / args.peak_bandwidth
                    rows.append({
                        "out_features": out_features, "in_features": in_features, "batch": batch,
                        "pattern": pattern, "sparsity": sparsity, "kernel": name, "ms": ms,
                        "speedup_vs_dense": speedup, "bytes": weight_bytes + io_bytes, "roofline_fraction": roofline,
                    })
                    print(f"gpu {out_features}x{in_features} b{batch:>2} {pattern} {sparsity:.0%} {name:>13}: "
                          f"{ms * 1e3:8.1f} us  {speedup:5.2f}x  {roofline:6.1%} of roofline")
    return {"device": torch.cuda.get_device_name(), "dtype": "float16", "peak_bandwidth": args.peak_bandwidth,
            "torch": torch.__version__, "results": rows}


def write_json(report: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {path}")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.section in ("gpu", "all"):
        report = gpu_section(args)
        if report is not None:
            write_json(report, args.gpu_output)
    if args.section in ("cpu", "all"):
        write_json(cpu_section(args), args.cpu_output)


if __name__ == "__main__":
    main()
