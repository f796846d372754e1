"""Build the default zoo entries from our own pipeline on the embedded digits data.

ResNet-20, VGG-11 (width 0.125) and the tiny ViT, each at 2x/4x/8x structured (channels; heads
too for the ViT), 50% and 90% unstructured, and 2:4. Each entry is a real ``run_prune`` run
whose report records the ``metaprune prune`` command that reproduces it (same seed, same
dense training), published with ``metaprune.zoo.publish``.

    python benchmarks/build_zoo.py --to zoo --subfolder entries --max-mb 1.2   # the packaged entries
    python benchmarks/build_zoo.py --to ~/metaprune-zoo                         # every entry, locally
    METAPRUNE_INDEX=~/metaprune-zoo/index.json metaprune zoo list

Entries whose files exceed ``--max-mb`` are built but not published (so the package stays small);
build them locally with the second command.

The text-to-image entry packages a prompt-routed pipeline trained by the CLI (the recipe is read
back from the run files and written into the card)::

    metaprune diffusion teacher --steps 1000 --batch-size 16 --out runs/dd-teacher
    metaprune diffusion prune --teacher runs/dd-teacher --budget 0.6 --stage1-steps 150 --stage2-steps 75 \
        --out runs/dd-aptp
    OMP_NUM_THREADS=1 python benchmarks/build_zoo.py --to zoo --subfolder entries \
        --diffusion-teacher runs/dd-teacher --diffusion-pipeline runs/dd-aptp --max-mb 8

It stores the experts and prompt table in float16, judges the float32 and float16 pipelines on the
same test prompts and seeds (digit-classifier accuracy and Fréchet distance, as
``benchmarks/aptp.py``), refuses to publish if the packaged one strays beyond sampling noise, and
writes ``benchmarks/results/zoo_text2img.json`` and a labelled sample grid.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from metaprune.data import load_digits_splits
from metaprune.prune.budget import Budget
from metaprune.prune.spec import PruningSpec
from metaprune.specs import TaskSpec, TrainingSpec
from metaprune.workflows.prune import PruneOptions, run_prune, train_dense
from metaprune.zoo import publish


@dataclass(frozen=True)
class Recipe:
    """One zoo entry: what to prune and how."""

    model: str
    tag: str
    pattern: str
    flops_ratio: float
    criterion: str = "group_l2"
    model_kwargs: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.model}-digits-{self.pattern.replace(':', '')}-{self.tag}"

    def command(self, epochs: int, finetune_epochs: int, seed: int) -> str:
        width = ["--width", str(self.model_kwargs["width"])] if "width" in self.model_kwargs else []
        args = ["prune", "--model", self.model, *width, "--budget", f"{self.flops_ratio:g}", "--pattern", self.pattern,
                "--criterion", self.criterion, "--epochs", str(epochs), "--finetune-epochs", str(finetune_epochs),
                "--seed", str(seed), "--out", f"runs/{self.name}"]
        return "metaprune " + shlex.join(args)


MODELS = {"resnet20": {}, "vgg11": {"width": 0.125}, "vit_tiny": {}}  # VGG-11 narrowed so every entry stays < 1 MB


def recipes(models: list[str]) -> list[Recipe]:
    """The 6 entries per model: 2x/4x/8x channel, 50%/90% unstructured, 2:4."""
    out = []
    for model in models:
        kwargs = MODELS[model]
        out += [Recipe(model, f"{speedup}x", "channel", 1 / speedup, model_kwargs=kwargs) for speedup in (2, 4, 8)]
        out += [Recipe(model, f"s{sparsity}", "unstructured", 1 - sparsity / 100, "l1", kwargs) for sparsity in (50, 90)]
        out.append(Recipe(model, "2of4", "n:m", 1.0, "l1", kwargs))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--to", default="zoo", help="zoo folder holding index.json")
    parser.add_argument("--subfolder", default="", help="entries go to TO/SUBFOLDER/NAME (the package uses 'entries')")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--max-mb", type=float, default=None, help="skip publishing entries larger than this")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--finetune-epochs", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--diffusion-teacher", help="teacher run of the text-to-image entry (with --diffusion-pipeline)")
    parser.add_argument("--diffusion-pipeline", help="package this prompt-routed pipeline instead of the CNN entries")
    parser.add_argument("--diffusion-name", default=TEXT2IMG_NAME)
    parser.add_argument("--eval-per-difficulty", type=int, default=100, help="test prompts per difficulty judged")
    parser.add_argument("--teacher-command", default=None,
                        help="the teacher command(s) actually run, when not one plain `teacher --steps N` run "
                             "(e.g. a run resumed with more --steps)")
    parser.add_argument("--train-wall-time-s", type=float, default=float("nan"),
                        help="measured wall time of teacher + prune, for the card")
    parser.add_argument("--refresh-cards", action="store_true",
                        help="republish every entry of --to from its own files (new card format), training nothing")
    args = parser.parse_args()
    if args.refresh_cards:
        refresh_cards(Path(args.to))
        return
    if args.diffusion_pipeline:
        torch.set_num_threads(1)
        build_text2img_entry(args)
        return
    torch.set_num_threads(2)
    splits = load_digits_splits(image_size=16, seed=args.seed)
    dense_models: dict[str, torch.nn.Module] = {}
    with tempfile.TemporaryDirectory() as scratch:
        for recipe in recipes(args.models):
            options = PruneOptions(
                Budget.from_ratio(recipe.flops_ratio),
                task=TaskSpec(model=recipe.model, model_kwargs=dict(recipe.model_kwargs), seed=args.seed),
                training=TrainingSpec.dense(args.epochs), finetune=TrainingSpec.finetune(args.finetune_epochs),
                pruning=PruningSpec(pattern=recipe.pattern, criterion=recipe.criterion),
                out=str(Path(scratch) / recipe.name),
                command=recipe.command(args.epochs, args.finetune_epochs, args.seed),
            )
            if recipe.model not in dense_models:  # the CLI command retrains it identically (same seed)
                dense_models[recipe.model] = train_dense(options.task, options.training, splits, progress=False)
            result = run_prune(options, splits=splits, dense_model=dense_models[recipe.model], progress=False)
            size_mb = sum(path.stat().st_size for path in result.run_dir.iterdir()) / 2**20
            report = result.report
            line = (f"{recipe.name:32s} FLOPs {report.speedup['flops']:.2f}x  test {report.dense.test_accuracy:.4f}"
                    f" -> {report.pruned.test_accuracy:.4f}  {size_mb:.2f} MB")
            if args.max_mb is not None and size_mb > args.max_mb:
                print(line, "(not published: larger than --max-mb)", flush=True)
                continue
            publish(result.run_dir, args.to, recipe.name, subfolder=args.subfolder)
            print(line, flush=True)


def refresh_cards(zoo: Path) -> None:
    """Republish each entry of ``zoo/index.json`` from its own folder: same files and figures, a card in the
    current format (Hub YAML header, latency notes). The publish checks run again on every entry."""
    from metaprune.zoo.registry import load_index

    for entry in load_index(zoo / "index.json").entries:
        folder = zoo / (entry.base_url or entry.name).rstrip("/")
        subfolder = str(Path(entry.base_url or entry.name).parent).strip(".")
        publish(folder, zoo, entry.name, subfolder=subfolder, task=entry.task, license=entry.license)
        print(f"republished {entry.name}", flush=True)


# --- the text-to-image entry -----------------------------------------------------------------------------

TEXT2IMG_NAME = "unet2d-digits-prompt-routed-f60"
DEFAULT_TOLERANCE = 0.1  # `metaprune diffusion prune --tolerance`
TEXT2IMG_GRID_PROMPTS = ["a digit 7", "a handwritten seven", "a thick digit 2", "an inverted digit 4",
                         "two digits: 3 and 7", "a photo of a cat"]


def _recipe_command(teacher_meta: dict, training_report: dict, tolerance: float, teacher_command: str | None = None
                    ) -> str:
    """The two CLI commands that made the pipeline, read back from its run files (``--tolerance`` when the
    budget check needs more than the default)."""
    train, config = teacher_meta["train"], training_report["config"]
    teacher = ["diffusion", "teacher", "--steps", str(train["steps"]), "--batch-size", str(train["batch_size"]),
               "--lr", f"{train['lr']:g}", "--seed", str(train["seed"]), "--out", "runs/dd-teacher"]
    prune = ["diffusion", "prune", "--teacher", "runs/dd-teacher", "--budget", f"{config['budget']:g}",
             "--codes", str(config["num_codes"]), "--stage1-steps", str(config["stage1_steps"]),
             "--stage2-steps", str(config["stage2_steps"]), "--guidance-weight", f"{config['guidance_weight']:g}",
             "--seed", str(config["seed"]), *(["--tolerance", f"{tolerance:g}"] if tolerance != DEFAULT_TOLERANCE else []),
             "--out", "runs/dd-aptp"]
    return f"{teacher_command or 'metaprune ' + shlex.join(teacher)} && metaprune {shlex.join(prune)}"


def build_text2img_entry(args: argparse.Namespace) -> None:
    """Judge the float32 pipeline and its float16 package on the same prompts and seeds, then publish the package."""
    from aptp import GUIDANCE, eval_subset, judge_images, latency_ms, sample_with, train_judge

    from metaprune.diffusion.aptp import check_mac_budget
    from metaprune.diffusion.gates import discover_gates
    from metaprune.diffusion.images import save_grid
    from metaprune.diffusion.macs import MacModel
    from metaprune.diffusion.pipeline import PromptRoutedPipeline
    from metaprune.diffusion.report import write_pipeline_report
    from metaprune.diffusion.task import is_task_prompt, load_digits_prompt_task
    from metaprune.diffusion.teacher import Sampling, load_unet, teacher_data_seed
    from metaprune.rundir import read_json

    started = time.perf_counter()
    teacher, meta = load_unet(args.diffusion_teacher)
    training = read_json(Path(args.diffusion_pipeline) / "report.json")
    full = PromptRoutedPipeline.load(args.diffusion_pipeline)
    task = load_digits_prompt_task(seed=teacher_data_seed(meta))
    judge, judge_accuracy = train_judge(task, epochs=8, seed=args.seed)
    evaluation = eval_subset(task, args.eval_per_difficulty, args.seed)
    prompts, real = evaluation.prompts, (evaluation.images + 1) / 2
    sampling = Sampling(num_inference_steps=20, guidance_scale=GUIDANCE)
    context_length = full.table.tokens.shape[1]
    layout = discover_gates(teacher, full.ff_groups)
    macs = MacModel(teacher, layout, context_length)
    expert_ratio = macs.ratio(full.gates)
    # the promise `prune` checks: every expert and the routed average (training prompts) near the budget
    budget = training["config"]["budget"]
    shares = torch.bincount(torch.as_tensor(full.route(task.train.prompts)), minlength=len(full.experts)).double()
    shares /= shares.sum()
    routed = float((shares * expert_ratio.double()).sum())
    needed = max(abs(value / budget - 1) for value in [*expert_ratio.tolist(), routed])
    tolerance = max(DEFAULT_TOLERANCE, math.ceil(needed * 20 - 1e-9) / 20)
    check_mac_budget(expert_ratio, shares, budget, tolerance)
    print(f"expert MAC ratios {[round(value, 3) for value in expert_ratio.tolist()]}, routed {routed:.3f} "
          f"(budget {budget:g}, tolerance {tolerance:g})", flush=True)
    with tempfile.TemporaryDirectory() as scratch:
        package = full.save_pretrained(Path(scratch) / args.diffusion_name, dtype="float16")
        half = PromptRoutedPipeline.load(package)
        judged = {}
        for label, pipe, seed in (("float32", full, args.seed + 1), ("float32_seed2", full, args.seed + 2),
                                  ("float16", half, args.seed + 1)):
            clock = time.perf_counter()
            out = pipe(prompts, num_inference_steps=sampling.num_inference_steps,
                       guidance_scale=sampling.guidance_scale, seed=seed)
            judged[label] = {**judge_images(judge, out.images, real, prompts), "experts": out.experts,
                             "images": out.images, "seconds": round(time.perf_counter() - clock, 1)}
            print(f"{label:14s} accuracy {judged[label]['accuracy']:.4f}  FD {judged[label]['fd']:.3f}  "
                  f"({judged[label]['seconds']} s)", flush=True)
        dense = judge_images(judge, sample_with(teacher, full.table, prompts, sampling, args.seed + 1), real, prompts)
        print(f"{'teacher':14s} accuracy {dense['accuracy']:.4f}  FD {dense['fd']:.3f}", flush=True)
        fp32, fp16, other = judged["float32"], judged["float16"], judged["float32_seed2"]
        standard_error = math.sqrt(fp32["accuracy"] * (1 - fp32["accuracy"]) / len(prompts))
        fd_noise = max(abs(other["fd"] - fp32["fd"]), 0.05 * fp32["fd"])
        precision = {
            "stored": "float16 experts and prompt table, float32 predictor; computed in float32",
            "float32": {"accuracy": fp32["accuracy"], "fd": fp32["fd"]},
            "float16": {"accuracy": fp16["accuracy"], "fd": fp16["fd"]},
            "float32_other_seed": {"accuracy": other["accuracy"], "fd": other["fd"]},
            "accuracy_standard_error": standard_error, "fd_noise": fd_noise,
            "same_expert_fraction": sum(a == b for a, b in zip(fp32["experts"], fp16["experts"])) / len(prompts),
            "max_pixel_difference": float((fp32["images"] - fp16["images"]).abs().max()),
            "mean_pixel_difference": float((fp32["images"] - fp16["images"]).abs().mean()),
        }
        within = (abs(fp16["accuracy"] - fp32["accuracy"]) <= 2 * standard_error
                  and abs(fp16["fd"] - fp32["fd"]) <= fd_noise)
        precision["within_noise"] = within
        chosen = torch.as_tensor(fp16["experts"])
        usage = torch.bincount(chosen, minlength=len(half.experts)).double() / len(chosen)
        expert_latency = [latency_ms(expert, context_length, 10) for expert in half.experts]
        experts = [{"code": code, "mac_ratio": expert_ratio[code].item(),
                    "params": sum(p.numel() for p in half.experts[code].parameters()),
                    "latency_ms": expert_latency[code]} for code in range(len(half.experts))]
        train = meta["train"]
        notes = [
            "Text-to-image on the digits task (16 x 16, one channel): a teacher `diffusers.UNet2DConditionModel` "
            f"pruned by APTP into {len(experts)} experts; each prompt's MiniLM embedding picks its expert. Any text is "
            "a prompt; only the task's own prompts ('a digit 7', 'a thick digit 2', 'two digits: 3 and 7', ...) can "
            "be judged.",
            f"'test accuracy' is judge accuracy: a separate digit CNN (real-digit accuracy {judge_accuracy:.3f}) reads "
            f"each generated image of {len(prompts)} test prompts ({args.eval_per_difficulty} per difficulty: single "
            "digit, attribute, two digits; 20 DDIM steps, guidance 2.0) and counts it right when every digit is the "
            "prompt's. The Fréchet distance is between its features on generated and real test images (lower is "
            "better).",
            f"Stored in half precision (experts and prompt table; the router stays float32), run in float32: judge "
            f"accuracy {fp16['accuracy']:.3f} vs {fp32['accuracy']:.3f} in float32 (standard error "
            f"{standard_error:.3f}), FD {fp16['fd']:.2f} vs {fp32['fd']:.2f} (another sampling seed in float32: "
            f"{other['fd']:.2f}); {precision['same_expert_fraction']:.0%} of prompts keep their expert, largest pixel "
            f"difference {precision['max_pixel_difference']:.3f}.",
            f"Short recipe: a {train['steps']}-step teacher (batch {train['batch_size']}"
            f"{'; trained as: ' + args.teacher_command if args.teacher_command else ''}) and "
            f"{training['config']['stage1_steps']} + {training['config']['stage2_steps']} x {len(experts)} APTP steps, "
            "trained single-threaded on a shared 2-core CPU; the README's 6,000-step teacher and 300 + 150 x 4 "
            "steps (`benchmarks/aptp.py`) draw better digits (judge accuracy 0.669).",
            "The teacher of this entry kept its weight average with metaprune's own EMA, since replaced by "
            "diffusers' `EMAModel` (same decay schedule but for the first update), so a rerun reproduces it up to "
            "float rounding.",
            "Folder: diffusers conventions (`model_index.json`; `scheduler/` and `unet/config.json` load with "
            "diffusers itself); `metaprune.diffusion.PromptRoutedPipeline.from_pretrained(folder)` loads the whole "
            "pipeline.",
        ]
        results = {
            "budget": training["config"]["budget"], "dense_macs": macs.dense, "config": {"seed": training["config"]["seed"]},
            "teacher": {**dense, "latency_ms": latency_ms(teacher, context_length, 10)},
            "aptp": {"accuracy": fp16["accuracy"], "fd": fp16["fd"], "mac_ratio": float((usage * expert_ratio).sum()),
                     "usage": usage.tolist(), "experts": experts,
                     "latency_ms": float((usage * torch.tensor(expert_latency, dtype=torch.float64)).sum())},
            "timings_s": {"aptp_train_s": args.train_wall_time_s},
            "command": _recipe_command(meta, training, tolerance, args.teacher_command), "card_notes": notes,
            "precision": {key: value for key, value in precision.items()},
        }
        write_pipeline_report(package, results)
        size_mb = sum(path.stat().st_size for path in package.rglob("*") if path.is_file()) / 2**20
        grid_prompts = [prompt for prompt in TEXT2IMG_GRID_PROMPTS for _ in range(8)]
        grid = half(grid_prompts, seed=7)
        save_grid(grid.images, RESULTS / "zoo_text2img.png", columns=8,
                  labels=[f"{prompt}  [expert {grid.experts[8 * row]}]" + ("" if is_task_prompt(prompt) else " *")
                          for row, prompt in enumerate(TEXT2IMG_GRID_PROMPTS)])
        summary = {"name": args.diffusion_name, "size_mb": size_mb, "judge_real_accuracy": judge_accuracy,
                   "eval_prompts": len(prompts), "teacher": {"accuracy": dense["accuracy"], "fd": dense["fd"]},
                   "expert_mac_ratio": expert_ratio.tolist(), "usage": usage.tolist(), **precision,
                   "seconds": round(time.perf_counter() - started, 1), "threads": torch.get_num_threads(),
                   "command": results["command"]}
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "zoo_text2img.json").write_text(json.dumps(summary, indent=1) + "\n")
        print(f"{args.diffusion_name}: {size_mb:.2f} MB, float16 {'within' if within else 'OUTSIDE'} noise of float32; "
              f"wrote {RESULTS / 'zoo_text2img.json'}", flush=True)
        if not within:
            raise SystemExit("not published: the float16 package strays beyond sampling noise")
        if args.max_mb is not None and size_mb > args.max_mb:
            raise SystemExit(f"not published: {size_mb:.2f} MB is larger than --max-mb {args.max_mb}")
        publish(package, args.to, args.diffusion_name, subfolder=args.subfolder, task="text-to-image")
        print(f"published {args.diffusion_name} to {Path(args.to, args.subfolder, args.diffusion_name)}", flush=True)


RESULTS = Path(__file__).resolve().parent / "results"


if __name__ == "__main__":
    main()
