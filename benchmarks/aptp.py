"""Prompt-routed pruning (APTP) vs the dense teacher and static pruned UNets, judged by a digit classifier.

A small CNN trained separately on real digits judges every generated image: accuracy for the
prompt's digit(s) (pairs are cut into halves; inverted images are flipped back), and the
Fréchet distance between its features on generated and on real test images. Also reported:
MACs per expert and on average (analytic, equal to FlopCounterMode on the sliced experts),
median CPU latency of one UNet call, expert usage entropy and the MAC ratio per difficulty.

Baselines at the same average MACs as the routed experts, with the same fine-tune budget
(``stage2_steps x codes`` distillation steps, plus ``stage1_steps`` with ``--joint``): one static
UNet pruned by weight magnitude and one by group L2.

    OMP_NUM_THREADS=1 python benchmarks/aptp.py --quick                   # minutes; results/aptp_quick.json
    OMP_NUM_THREADS=1 python benchmarks/aptp.py [--seed N]                # results/aptp[_seedN].json and sample grids
    OMP_NUM_THREADS=1 python benchmarks/aptp.py --guidance-weight 0       # plain distillation: results/aptp_plain.json
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import linalg
from torch import nn

from metaprune.diffusion.aptp import APTPConfig, finetune_expert, train_stage1, train_stage2
from metaprune.diffusion.gates import discover_gates
from metaprune.diffusion.images import save_grid
from metaprune.diffusion.macs import MacModel, UNetCall
from metaprune.diffusion.pipeline import PromptRoutedPipeline
from metaprune.diffusion.report import write_pipeline_report
from metaprune.diffusion.slicing import slice_unet
from metaprune.diffusion.static import static_gates
from metaprune.diffusion.task import (
    DIFFICULTY_NAMES,
    all_prompts,
    is_task_prompt,
    load_digits_prompt_task,
    parse_prompt,
)
from metaprune.diffusion.teacher import (
    Sampling,
    TrainConfig,
    UNetConfig,
    generate,
    load_unet,
    teacher_data_seed,
    train_teacher,
)
from metaprune.diffusion.text_encoder import EmbeddingTable, PromptEncoder
from metaprune.flops import measure_latency
from metaprune.rundir import TEACHER_CONFIG_FILE

GUIDANCE = 2.0  # classifier-free guidance scale of sampling (and of guided distillation)
GUIDANCE_TAGS = {0.0: "_plain", APTPConfig.guidance_weight: ""}  # result-file tags; the default has none
RESULTS = Path(__file__).resolve().parent / "results"
GRID_PROMPTS = ["a digit 0", "a digit 7", "a thick digit 2", "a thin digit 5", "an inverted digit 4",
                "two digits: 3 and 7", "two digits: 1 and 9", "two digits: 8 and 2"]


class Judge(nn.Module):
    """A small CNN digit classifier; ``features`` is its 64-d penultimate layer."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(32 * 16, 64), nn.ReLU())
        self.head = nn.Linear(64, 10)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.body(images)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))


def digit_crops(images: torch.Tensor, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per digit the prompt asks for: a 16 x 16 crop in [0, 1] (halves of pairs stretched back,
    inverted images flipped back), its label and the index of its image."""
    crops, labels, owners = [], [], []
    for index, (image, prompt) in enumerate(zip(images, prompts)):
        info = parse_prompt(prompt)
        image = 1 - image if info.attribute == "inverted" else image
        if len(info.digits) == 2:
            halves = [image[..., :8], image[..., 8:]]
            parts = [F.interpolate(half[None], size=(16, 16), mode="bilinear", align_corners=False)[0] for half in halves]
        else:
            parts = [image]
        crops += parts
        labels += list(info.digits)
        owners += [index] * len(parts)
    return torch.stack(crops), torch.as_tensor(labels), torch.as_tensor(owners)


def train_judge(task, epochs: int, seed: int) -> tuple[Judge, float]:
    """The judge, trained on crops of real training images; returns it and its real test accuracy."""
    torch.manual_seed(seed)
    crops, labels, _ = digit_crops((task.train.images + 1) / 2, task.train.prompts)
    judge = Judge()
    optimizer = torch.optim.Adam(judge.parameters(), lr=2e-3)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        order = torch.randperm(len(crops), generator=generator)
        for start in range(0, len(crops), 128):
            batch = order[start:start + 128]
            shifted = torch.roll(crops[batch], shifts=tuple(torch.randint(-1, 2, (2,), generator=generator).tolist()),
                                 dims=(2, 3))
            loss = F.cross_entropy(judge(shifted), labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    judge.eval()
    test_crops, test_labels, _ = digit_crops((task.test.images + 1) / 2, task.test.prompts)
    with torch.no_grad():
        accuracy = (judge(test_crops).argmax(1) == test_labels).float().mean().item()
    return judge, accuracy


def frechet_distance(first: np.ndarray, second: np.ndarray) -> float:
    """Fréchet distance between Gaussian fits of two feature sets (rows are samples)."""
    mean_a, mean_b = first.mean(0), second.mean(0)
    cov_a, cov_b = np.cov(first, rowvar=False), np.cov(second, rowvar=False)
    root, _ = linalg.sqrtm(cov_a @ cov_b, disp=False)
    return float(((mean_a - mean_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * np.real(root)))


@torch.no_grad()
def judge_images(judge: Judge, images: torch.Tensor, real: torch.Tensor, prompts: list[str]) -> dict:
    """Accuracy (all digits right), accuracy per difficulty and FD of judge features vs the real images.

    Only the task's own prompts can be judged (:func:`is_task_prompt`); images of free-text prompts are
    left out (``judged`` counts the rest).
    """
    keep = [index for index, prompt in enumerate(prompts) if is_task_prompt(prompt)]
    if len(keep) < len(prompts):
        images, real, prompts = images[keep], real[keep], [prompts[index] for index in keep]
    crops, labels, owners = digit_crops(images, prompts)
    correct = (judge(crops).argmax(1) == labels).float()
    per_image = torch.ones(len(prompts)).index_reduce_(0, owners, correct, "amin")
    difficulty = torch.as_tensor([parse_prompt(prompt).difficulty for prompt in prompts])
    real_crops, _, _ = digit_crops(real, prompts)
    fd = frechet_distance(judge.features(crops).numpy().astype(np.float64),
                          judge.features(real_crops).numpy().astype(np.float64))
    return {"accuracy": per_image.mean().item(), "fd": fd, "judged": len(prompts),
            "accuracy_by_difficulty": {DIFFICULTY_NAMES[d]: per_image[difficulty == d].mean().item()
                                       for d in range(3) if (difficulty == d).any()}}


def sample_with(unet: nn.Module, table: EmbeddingTable, prompts: list[str], sampling: Sampling, seed: int) -> torch.Tensor:
    """Images in [0, 1] of one UNet for ``prompts`` (batches of 64, one generator)."""
    generator = torch.Generator().manual_seed(seed)
    chunks = [generate(unet, table.lookup(prompts[start:start + 64])[0], table.null(), sampling, generator)
              for start in range(0, len(prompts), 64)]
    return (torch.cat(chunks) + 1) / 2


def latency_ms(unet: nn.Module, context_length: int, repeats: int) -> float:
    """Median ms of one guided UNet call (batch 2: unconditional + conditional), one thread."""
    return measure_latency(UNetCall(unet, context_length), torch.zeros(2, 1, 16, 16), repeats=repeats,
                           warmup=3, threads=1).median_ms


def eval_subset(task, per_difficulty: int, seed: int):
    """A seeded test subset with ``per_difficulty`` samples of each difficulty."""
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for difficulty in range(3):
        candidates = (task.test.difficulty == difficulty).nonzero().squeeze(1)
        rows += candidates[torch.randperm(len(candidates), generator=generator)[:per_difficulty]].tolist()
    return task.test.subset(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short run (fewer steps and samples)")
    parser.add_argument("--teacher", default="runs/dd-teacher", help="teacher run dir (trained here if missing)")
    parser.add_argument("--budget", type=float, default=0.6)
    parser.add_argument("--codes", type=int, default=4)
    parser.add_argument("--joint", action="store_true", help="fine-tune the UNet jointly with the predictor in stage 1")
    parser.add_argument("--min-mac-ratio", type=float, default=0.0, help="per-prompt MAC floor of stage 1 (0: off)")
    parser.add_argument("--guidance-weight", type=float, default=4.0,
                        help="weight of guided (classifier-free guidance) distillation; 0: plain distillation with prompt dropout")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/dd-aptp-bench", help="where the routed pipeline is saved")
    args = parser.parse_args()
    torch.set_num_threads(1)
    quick = args.quick
    started = time.perf_counter()
    tag = (f"{'_quick' if quick else ''}{'_joint' if args.joint else ''}{f'_floor{args.min_mac_ratio:g}' if args.min_mac_ratio else ''}"
           f"{GUIDANCE_TAGS.get(args.guidance_weight, f'_guided{args.guidance_weight:g}')}{f'_seed{args.seed}' if args.seed else ''}")
    config = APTPConfig(budget=args.budget, num_codes=args.codes, seed=args.seed, min_mac_ratio=args.min_mac_ratio,
                        joint_finetune=args.joint, guidance_weight=args.guidance_weight,
                        guidance_scale=GUIDANCE,
                        stage1_steps=80 if quick else 300, stage2_steps=40 if quick else 150)
    sampling = Sampling(num_inference_steps=10 if quick else 20, guidance_scale=GUIDANCE)
    table = EmbeddingTable.build(PromptEncoder(), all_prompts())
    context_length = table.tokens.shape[1]
    if not (Path(args.teacher) / TEACHER_CONFIG_FILE).is_file():
        train_teacher(load_digits_prompt_task(seed=0).train, table, args.teacher, UNetConfig(),
                      TrainConfig(steps=400 if quick else 6000, data_seed=0))
    teacher, teacher_meta = load_unet(args.teacher)
    # the teacher's split for everyone (students, judge, evaluation); --seed varies everything else
    task = load_digits_prompt_task(seed=teacher_data_seed(teacher_meta))
    judge, judge_accuracy = train_judge(task, epochs=4 if quick else 8, seed=args.seed)
    evaluation = eval_subset(task, 20 if quick else 150, args.seed)
    real = (evaluation.images + 1) / 2
    repeats = 10 if quick else 30
    layout = discover_gates(teacher, config.ff_groups)
    macs = MacModel(teacher, layout, context_length)
    timings: dict[str, float] = {}

    clock = time.perf_counter()
    stage1 = train_stage1(teacher, task.train, table, config)
    stage2 = train_stage2(teacher, stage1.predictor, task.train, table, config, base=stage1.unet)
    timings["aptp_train_s"] = time.perf_counter() - clock
    pipe = PromptRoutedPipeline(stage1.predictor, stage2.experts, stage2.gates, table, UNetConfig.from_dict(teacher_meta["unet"]),
                                sampling, config.ff_groups)
    pipe.save(args.out)
    routed = pipe(evaluation.prompts, seed=args.seed + 1)
    expert_ratio = macs.ratio(stage2.gates)
    chosen = torch.as_tensor(routed.experts)
    usage = torch.bincount(chosen, minlength=config.num_codes).double() / len(chosen)
    average_ratio = float((usage * expert_ratio).sum())
    expert_latency = [latency_ms(expert, context_length, repeats) for expert in stage2.experts]
    difficulty = evaluation.difficulty
    aptp = {**judge_images(judge, routed.images, real, evaluation.prompts),
            "mac_ratio": average_ratio, "latency_ms": float((usage * torch.tensor(expert_latency, dtype=torch.float64)).sum()),
            "usage": usage.tolist(), "usage_entropy_nats": float(-(usage[usage > 0] * usage[usage > 0].log()).sum()),
            "usage_entropy_max_nats": math.log(config.num_codes),
            "mac_ratio_by_difficulty": {DIFFICULTY_NAMES[d]: expert_ratio[chosen[difficulty == d]].mean().item()
                                        for d in range(3)},
            "experts": [{"code": code, "mac_ratio": expert_ratio[code].item(), "macs": int(macs.macs(stage2.gates[code]).item()),
                         "params": sum(p.numel() for p in stage2.experts[code].parameters()),
                         "latency_ms": expert_latency[code], "train_prompts": len(stage2.prompts_per_code[code]),
                         "example_prompts": stage2.prompts_per_code[code][:6]} for code in range(config.num_codes)],
            "stage1_last": {key: float(np.mean([row[key] for row in stage1.history[-20:]])) for key in stage1.history[-1]}}
    save_grid(pipe([p for p in GRID_PROMPTS for _ in range(6)], seed=7).images, RESULTS / f"aptp{tag}_routed.png", columns=6)

    results = {"quick": quick, "budget": args.budget, "config": vars(args), "judge_real_test_accuracy": judge_accuracy,
               "eval_samples": len(evaluation), "sampling": {"steps": sampling.num_inference_steps,
                                                             "guidance": sampling.guidance_scale},
               "dense_macs": macs.dense, "aptp": aptp}
    dense = judge_images(judge, sample_with(teacher, table, evaluation.prompts, sampling, args.seed + 1), real,
                         evaluation.prompts)
    results["teacher"] = {**dense, "mac_ratio": 1.0, "latency_ms": latency_ms(teacher, context_length, repeats)}
    save_grid(sample_with(teacher, table, [p for p in GRID_PROMPTS for _ in range(6)], sampling, 7),
              RESULTS / f"aptp{tag}_teacher.png", columns=6)
    # the static UNet gets every UNet update APTP made: stage 2, plus stage 1 when it was joint
    finetune_steps = config.stage2_steps * config.num_codes + (config.stage1_steps if config.joint_finetune else 0)
    for criterion in ("magnitude", "group_l2"):
        clock = time.perf_counter()
        gates = static_gates(teacher, layout, macs, average_ratio, criterion)
        static = slice_unet(teacher, layout, gates)
        finetune_expert(static, teacher, task.train, table, finetune_steps, config, seed=args.seed + 99, desc=criterion)
        timings[f"static_{criterion}_train_s"] = time.perf_counter() - clock
        images = sample_with(static, table, evaluation.prompts, sampling, args.seed + 1)
        results[f"static_{criterion}"] = {**judge_images(judge, images, real, evaluation.prompts),
                                          "mac_ratio": macs.ratio(gates).item(),
                                          "latency_ms": latency_ms(static, context_length, repeats),
                                          "finetune_steps": finetune_steps}
        save_grid(sample_with(static, table, [p for p in GRID_PROMPTS for _ in range(6)], sampling, 7),
                  RESULTS / f"aptp{tag}_static_{criterion}.png", columns=6)
    best_static = min((results[f"static_{c}"] for c in ("magnitude", "group_l2")), key=lambda r: r["fd"])
    results["routed_beats_static"] = {"accuracy": aptp["accuracy"] > max(results[f"static_{c}"]["accuracy"]
                                                                         for c in ("magnitude", "group_l2")),
                                      "fd": aptp["fd"] < best_static["fd"]}
    results["timings_s"] = {**{key: round(value, 1) for key, value in timings.items()},
                            "total": round(time.perf_counter() - started, 1)}
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"aptp{tag}.json"
    path.write_text(json.dumps(results, indent=1))
    write_pipeline_report(args.out, results)  # makes args.out publishable with `metaprune zoo publish`
    for name in ("teacher", "aptp", "static_magnitude", "static_group_l2"):
        row = results[name]
        print(f"{name:18s} acc {row['accuracy']:.3f}  fd {row['fd']:8.3f}  macs x{row['mac_ratio']:.3f}  "
              f"latency {row['latency_ms']:.2f} ms  by difficulty {row['accuracy_by_difficulty']}")
    print(f"expert usage {aptp['usage']}  entropy {aptp['usage_entropy_nats']:.3f}/{aptp['usage_entropy_max_nats']:.3f}; "
          f"MACs by difficulty {aptp['mac_ratio_by_difficulty']}; wrote {path}")


if __name__ == "__main__":
    main()
