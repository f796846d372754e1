"""``metaprune diffusion ...``: train the teacher, prune it into prompt-routed experts, sample.

::

    metaprune diffusion teacher --out runs/dd-teacher
    metaprune diffusion prune --teacher runs/dd-teacher --budget 0.6 --out runs/dd-aptp
    metaprune diffusion sample "two digits: 3 and 7" "a handwritten seven" --model runs/dd-aptp --out grid.png

Any text is a prompt (the router reads its MiniLM embedding); the grid labels each row with its
prompt and expert. ``prune`` ends by checking its budget: every expert and the routed average must
keep ``budget * (1 ± --tolerance)`` of the teacher's MACs, or it fails and writes nothing.

Every :class:`MetapruneError` (a budget outside (0, 1], a non-finite or out-of-range number, an
output path that cannot be written, a missing or corrupt run directory, a missed budget)
is one ``error: ...`` line on stderr and exit status 1. ``prune`` refuses a non-empty ``--out``
unless ``--overwrite`` is given; ``teacher`` resumes the teacher run in its ``--out``.
"""

from __future__ import annotations

from typing import Annotated

import typer

from metaprune.cli import options
from metaprune.cli.zoo import one_line_errors

app = typer.Typer(help="Prompt-routed pruning (APTP) of a diffusers UNet on the digits text-to-image task.",
                  no_args_is_help=True, pretty_exceptions_enable=False)



@app.command()
def teacher(
    out: Annotated[str, typer.Option(help="Run directory (resumes from its checkpoint).")] = "runs/dd-teacher",
    steps: Annotated[int, typer.Option(help="Training steps.")] = 6000,
    batch_size: Annotated[int, typer.Option(help="Images per step.")] = 32,
    lr: Annotated[float, typer.Option(help="Peak learning rate (cosine decay).")] = 1e-3,
    seed: options.Seed = 0,
) -> None:
    """Train the dense teacher UNet (writes unet.safetensors and unet.json; resumable)."""
    from metaprune.cli import command_line
    from metaprune.diffusion.teacher import TrainConfig
    from metaprune.logs import run_log
    from metaprune.workflows.diffusion import train_diffusion_teacher

    with one_line_errors():
        with run_log(out, header=command_line()):
            train_diffusion_teacher(out, TrainConfig(steps=steps, batch_size=batch_size, lr=lr, seed=seed,
                                                     data_seed=seed))
        typer.echo(f"teacher written to {out}")


@app.command()
def prune(
    teacher: Annotated[str, typer.Option(help="Teacher run directory.")] = "runs/dd-teacher",
    budget: Annotated[float, typer.Option(help="Target average MAC ratio, 0 < r <= 1.")] = 0.6,
    out: Annotated[str, typer.Option(help="Output folder of the prompt-routed pipeline.")] = "runs/dd-aptp",
    codes: Annotated[int, typer.Option(help="Number of architecture codes (experts).")] = 4,
    stage1_steps: Annotated[int, typer.Option(help="Predictor training steps.")] = 300,
    stage2_steps: Annotated[int, typer.Option(help="Fine-tuning steps per expert.")] = 150,
    joint: Annotated[bool, typer.Option(help="Fine-tune the UNet jointly in stage 1.")] = False,
    min_mac_ratio: Annotated[float, typer.Option(help="Per-prompt MAC floor in stage 1 (0: none).")] = 0.0,
    guidance_weight: Annotated[float, typer.Option(help="Weight of guided distillation (0: plain distillation).")]
    = 4.0,
    seed: Annotated[int, typer.Option(help="Seed of the predictor and fine-tuning (the data split is the teacher's).")]
    = 0,
    tolerance: Annotated[float, typer.Option(
        help="Relative tolerance of the budget, checked at the end: every expert and the routed average must "
             "keep budget * (1 ± tolerance) of the MACs, or the command fails.")] = 0.1,
    overwrite: options.Overwrite = False,
) -> None:
    """Train the architecture predictor, slice and fine-tune one expert per code, save the pipeline."""
    from metaprune.cli import command_line
    from metaprune.diffusion.aptp import APTPConfig
    from metaprune.logs import run_log
    from metaprune.workflows.diffusion import prune_diffusion_teacher

    with one_line_errors():
        config = APTPConfig(budget=budget, num_codes=codes, stage1_steps=stage1_steps, stage2_steps=stage2_steps,
                            joint_finetune=joint, min_mac_ratio=min_mac_ratio, guidance_weight=guidance_weight,
                            seed=seed, budget_tolerance=tolerance)
        with run_log(out, header=command_line()):
            report = prune_diffusion_teacher(teacher, out, config, overwrite=overwrite)
        typer.echo(f"{codes} experts at MAC ratios {[round(r, 3) for r in report['expert_mac_ratio']]} "
                   f"(routed average {report['routed_mac_ratio']:.3f}, budget {budget:g}) -> {out}")


@app.command()
def sample(
    prompts: Annotated[list[str], typer.Argument(
        help="Prompts, any text: e.g. 'a digit 3' 'two digits: 3 and 7' 'a handwritten seven'.")],
    model: Annotated[str, typer.Option(help="Pipeline folder written by `prune` (or pulled from the zoo).")]
    = "runs/dd-aptp",
    out: Annotated[str, typer.Option(help="PNG grid to write.")] = "grid.png",
    per_prompt: Annotated[int, typer.Option(help="Images per prompt (one grid row each), 1 to 64.")] = 8,
    steps: Annotated[int, typer.Option(help="DDIM steps, 1 to 1000.")] = 20,
    guidance: Annotated[float, typer.Option(help="Classifier-free guidance scale, 0 to 100.")] = 2.0,
    seed: options.Seed = 0,
) -> None:
    """Sample a grid: one labelled row per prompt, drawn by the expert the prompt is routed to."""
    from metaprune.diffusion.task import is_task_prompt
    from metaprune.workflows.diffusion import sample_grid

    with one_line_errors():
        experts = sample_grid(model, prompts, out, per_prompt=per_prompt, steps=steps, guidance=guidance, seed=seed)
        for prompt, expert in zip(prompts, experts, strict=True):
            note = "" if is_task_prompt(prompt) else " (free text: drawn, but outside what the digits judge scores)"
            typer.echo(f"{prompt!r} -> expert {expert}{note}")
        typer.echo(f"grid written to {out}")
