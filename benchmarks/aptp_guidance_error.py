"""How well routed experts keep the teacher's classifier-free-guidance direction.

For saved prompt-routed pipelines (``benchmarks/aptp.py --out DIR``), on one seeded batch of noisy
test images with their prompts, each prompt answered by the expert it is routed to: relative MSE
of the conditional prediction ``c`` and of the guidance direction ``c - u`` against the teacher.
Plain distillation keeps ``c`` to a few percent but not ``c - u``; guided distillation targets it.

    python benchmarks/aptp_guidance_error.py runs/dd-aptp-6k-plain-s0 runs/dd-aptp-6k-guided-s0
"""

from __future__ import annotations

import argparse
import json

import torch

from metaprune.diffusion.pipeline import PromptRoutedPipeline
from metaprune.diffusion.task import all_prompts, load_digits_prompt_task
from metaprune.diffusion.teacher import (
    draw_batch,
    load_unet,
    noisy_batch,
    teacher_data_seed,
    train_scheduler,
)
from metaprune.diffusion.text_encoder import EmbeddingTable, PromptEncoder


@torch.no_grad()
def predictions(unet: torch.nn.Module, noisy: torch.Tensor, steps: torch.Tensor, context: torch.Tensor,
                null: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Conditional prediction and guidance direction ``(c, c - u)``."""
    conditional = unet(noisy, steps, encoder_hidden_states=context).sample
    return conditional, conditional - unet(noisy, steps, encoder_hidden_states=null.expand_as(context)).sample


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pipelines", nargs="+", help="saved PromptRoutedPipeline folders")
    parser.add_argument("--teacher", default="runs/dd-teacher")
    parser.add_argument("--samples", type=int, default=256)
    args = parser.parse_args()
    teacher, meta = load_unet(args.teacher)
    task = load_digits_prompt_task(seed=teacher_data_seed(meta))
    table = EmbeddingTable.build(PromptEncoder(), all_prompts())
    generator = torch.Generator().manual_seed(0)
    images, context, prompts = draw_batch(task.test, table, args.samples, generator)
    noisy, _, steps = noisy_batch(train_scheduler(), images, generator)
    null = table.null()
    teacher_c, teacher_d = predictions(teacher, noisy, steps, context, null)
    print(f"teacher RMS: c {teacher_c.pow(2).mean().sqrt():.3f}, c - u {teacher_d.pow(2).mean().sqrt():.3f}")
    results = {}
    for folder in args.pipelines:
        pipe = PromptRoutedPipeline.load(folder)
        routes = pipe.predictor.route(table.lookup(prompts)[1])
        error_c, error_d = torch.zeros_like(teacher_c), torch.zeros_like(teacher_d)
        for code, expert in enumerate(pipe.experts):
            rows = (routes == code).nonzero().squeeze(1)
            if len(rows):
                c, d = predictions(expert, noisy[rows], steps[rows], context[rows], null)
                error_c[rows], error_d[rows] = c - teacher_c[rows], d - teacher_d[rows]
        results[folder] = {"relative_mse_c": (error_c.pow(2).mean() / teacher_c.pow(2).mean()).item(),
                           "relative_mse_guidance": (error_d.pow(2).mean() / teacher_d.pow(2).mean()).item()}
        print(f"{folder}: relative MSE  c {results[folder]['relative_mse_c']:.4f}  "
              f"c - u {results[folder]['relative_mse_guidance']:.4f}")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
