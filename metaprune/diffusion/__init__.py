"""Prompt-routed pruning (APTP) of a stock ``diffusers`` UNet, trainable on a CPU.

A text-to-image task on real digits (:mod:`.task`), a frozen MiniLM prompt encoder
(:mod:`.text_encoder`), a tiny ``UNet2DConditionModel`` teacher (:mod:`.teacher`), exact gates
on its channels, heads, feed-forward units and blocks (:mod:`.gates`, :mod:`.slicing`,
:mod:`.macs`), the architecture predictor and its losses (:mod:`.predictor`, :mod:`.losses`),
the two training stages (:mod:`.aptp`) and the routed pipeline (:mod:`.pipeline`)::

    from metaprune.diffusion import PromptRoutedPipeline
    pipe = PromptRoutedPipeline.load("runs/dd-aptp")
    out = pipe(["a digit 3", "two digits: 3 and 7"], num_inference_steps=20, guidance_scale=2.0, seed=0)
    out.images.shape, out.experts          # (2, 1, 16, 16), e.g. [1, 3]
"""

from metaprune.diffusion.aptp import APTPConfig, train_stage1, train_stage2
from metaprune.diffusion.gates import GateController, GateLayout, discover_gates
from metaprune.diffusion.macs import MacModel
from metaprune.diffusion.pipeline import PipelineOutput, PromptRoutedPipeline
from metaprune.diffusion.predictor import ArchitecturePredictor, gumbel_sigmoid
from metaprune.diffusion.slicing import slice_unet
from metaprune.diffusion.task import load_digits_prompt_task, parse_prompt
from metaprune.diffusion.text_encoder import EmbeddingTable, PromptEncoder

__all__ = [
    "APTPConfig", "ArchitecturePredictor", "EmbeddingTable", "GateController", "GateLayout", "MacModel",
    "PipelineOutput", "PromptEncoder", "PromptRoutedPipeline", "discover_gates", "gumbel_sigmoid",
    "load_digits_prompt_task", "parse_prompt", "slice_unet", "train_stage1", "train_stage2",
]
