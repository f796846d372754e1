"""``metaprune diffusion ...``: train the teacher, prune it into prompt-routed experts, sample.

::

    metaprune diffusion teacher --out runs/dd-teacher
    metaprune diffusion prune --teacher runs/dd-teacher --budget 0.6 --out runs/dd-aptp
    metaprune diffusion sample "two digits: 3 and 7" --model runs/dd-aptp --out grid.png

Every :class:`MetapruneError` (a budget outside (0, 1], a missing run directory, an unknown
prompt form) is one ``error: ...`` line on stderr and exit status 1.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer

from metaprune.errors import ConfigError, WeightsError
from metaprune.zoo.cli import one_line_errors

app = typer.Typer(help="Prompt-routed pruning (APTP) of a diffusers UNet on the digits text-to-image task.",
                  no_args_is_help=True, pretty_exceptions_enable=False)

SeedOption = Annotated[int, typer.Option(help="Seed of data, initialisation and training.")]


def _embedding_table(seed: int):
    from metaprune.zoo.diffusion.task import all_prompts, load_digits_prompt_task
    from metaprune.zoo.diffusion.text_encoder import EmbeddingTable, PromptEncoder

    return load_digits_prompt_task(seed=seed), EmbeddingTable.build(PromptEncoder(), all_prompts())


@app.command()
def teacher(
    out: Annotated[str, typer.Option(help="Run directory (resumes from its checkpoint).")] = "runs/dd-teacher",
    steps: Annotated[int, typer.Option(help="Training steps.")] = 6000,
    batch_size: Annotated[int, typer.Option(help="Images per step.")] = 32,
    lr: Annotated[float, typer.Option(help="Peak learning rate (cosine decay).")] = 1e-3,
    seed: SeedOption = 0,
) -> None:
    """Train the dense teacher UNet (writes unet.safetensors and unet.json; resumable)."""
    from metaprune.zoo.diffusion.teacher import TrainConfig, UNetConfig, train_teacher

    with one_line_errors():
        config = TrainConfig(steps=steps, batch_size=batch_size, lr=lr, seed=seed, data_seed=seed)
        config.validate()
        task, table = _embedding_table(config.data_seed)
        train_teacher(task.train, table, out, UNetConfig(), config)
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
) -> None:
    """Train the architecture predictor, slice and fine-tune one expert per code, save the pipeline."""
    from metaprune.zoo.diffusion.aptp import APTPConfig, train_stage1, train_stage2
    from metaprune.zoo.diffusion.gates import discover_gates
    from metaprune.zoo.diffusion.macs import MacModel
    from metaprune.zoo.diffusion.pipeline import PromptRoutedPipeline
    from metaprune.zoo.diffusion.teacher import UNetConfig, load_unet, teacher_data_seed

    with one_line_errors():
        config = APTPConfig(budget=budget, num_codes=codes, stage1_steps=stage1_steps, stage2_steps=stage2_steps,
                            joint_finetune=joint, min_mac_ratio=min_mac_ratio, guidance_weight=guidance_weight,
                            seed=seed)
        config.validate()
        if not Path(teacher).is_dir():
            raise WeightsError(f"teacher directory {teacher} does not exist; train one with "
                               f"`metaprune diffusion teacher --out {teacher}`")
        unet, meta = load_unet(teacher)
        task, table = _embedding_table(teacher_data_seed(meta))  # the teacher's split: its test images stay unseen
        stage1 = train_stage1(unet, task.train, table, config)
        stage2 = train_stage2(unet, stage1.predictor, task.train, table, config, base=stage1.unet)
        pipe = PromptRoutedPipeline(stage1.predictor, stage2.experts, stage2.gates, table,
                                    UNetConfig.from_dict(meta["unet"]), ff_groups=config.ff_groups)
        pipe.save(out)
        macs = MacModel(unet, discover_gates(unet, config.ff_groups), table.tokens.shape[1])
        report = {"config": asdict(config), "teacher": teacher, "expert_mac_ratio": macs.ratio(stage2.gates).tolist(),
                  "prompts_per_expert": stage2.prompts_per_code, "stage1": stage1.history,
                  "stage2_losses": stage2.losses}
        Path(out, "report.json").write_text(json.dumps(report, indent=1))
        typer.echo(f"{codes} experts at MAC ratios {[round(r, 3) for r in report['expert_mac_ratio']]} -> {out}")


@app.command()
def sample(
    prompts: Annotated[list[str], typer.Argument(help="Prompts, e.g. 'a digit 3' 'two digits: 3 and 7'.")],
    model: Annotated[str, typer.Option(help="Pipeline folder written by `prune`.")] = "runs/dd-aptp",
    out: Annotated[str, typer.Option(help="PNG grid to write.")] = "grid.png",
    per_prompt: Annotated[int, typer.Option(help="Images per prompt (one grid row each).")] = 8,
    steps: Annotated[int, typer.Option(help="DDIM steps.")] = 20,
    guidance: Annotated[float, typer.Option(help="Classifier-free guidance scale.")] = 2.0,
    seed: SeedOption = 0,
) -> None:
    """Sample a grid: one row per prompt, drawn by the expert the prompt is routed to."""
    from metaprune.zoo.diffusion.images import save_grid
    from metaprune.zoo.diffusion.pipeline import PromptRoutedPipeline
    from metaprune.zoo.diffusion.task import parse_prompt

    with one_line_errors():
        for prompt in prompts:
            parse_prompt(prompt)
        if per_prompt < 1:
            raise ConfigError(f"--per-prompt must be at least 1, got {per_prompt}")
        pipe = PromptRoutedPipeline.load(model)
        result = pipe([prompt for prompt in prompts for _ in range(per_prompt)], num_inference_steps=steps,
                      guidance_scale=guidance, seed=seed)
        save_grid(result.images, out, columns=per_prompt)
        for index, prompt in enumerate(prompts):
            typer.echo(f"{prompt!r} -> expert {result.experts[index * per_prompt]}")
        typer.echo(f"grid written to {out}")

