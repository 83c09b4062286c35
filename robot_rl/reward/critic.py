"""The pairwise progress critic: (earlier frame, later frame, instruction[, reference frames]) ->
(progress delta in [-1, 1], probability that the later frame shows the task done).

Read top to bottom: the flat config, the model, what goes in and out.

Inputs (batch first, exactly what the ONNX export takes; one image per camera and role):
  ``early_<camera>``      uint8 (B, H, W, 3) RGB, the earlier observation
  ``late_<camera>``       uint8 (B, H, W, 3) RGB, the later observation
  ``instruction``         float32 (B, 384) all-MiniLM-L6-v2 embedding of the instruction
  ``reference_<camera>``  uint8 (R, K, H, W, 3) frames of a successful episode of the same task,
                          evenly spaced from its start to its success (one-shot context); R is 1 (one
                          reference episode for the whole batch, the usual case) or B
  ``reference_mask``      float32 (B,) 1 where the reference frames count, 0 where there are none
                          (then the frames are ignored and a learned "no reference" context is used;
                          pass one set of zero frames with R = 1)

Outputs:
  ``delta``      float32 (B,) signed progress from early to late (positive: closer to done)
  ``done_prob``  float32 (B,) probability that the later observation shows the task done

Design: one CNN encodes every frame; its features are modulated by the instruction (FiLM), so the
same pixels mean different progress for different instructions. The pair head scores
``s(a, b)`` and the delta is ``tanh(s(a, b) - s(b, a))``: antisymmetric by construction, so
reversing a pair negates its delta exactly and two identical frames give exactly 0, whatever the
weights. The done head sees the later frame, the instruction and the reference context.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from robot_rl.policy.text import EMBEDDING_DIM
from robot_rl.policy.vla import POOLINGS, ConvEncoder, config_from_dict


@dataclass
class CriticConfig:
    cameras: list[str] = field(default_factory=lambda: ["front", "wrist"])
    image_height: int = 48  # frames are box-downscaled to this (the sim cameras give 128x96)
    image_width: int = 64
    cnn_channels: tuple[int, ...] = (16, 32, 64, 64)
    image_features: int = 64  # per camera
    pooling: str = "mean"  # "mean" or "spatial_softmax" (keypoint positions; see policy/vla.py)
    keypoints: int = 32
    hidden: int = 256
    text_dim: int = EMBEDDING_DIM
    reference_frames: int = 4  # K

    def __post_init__(self) -> None:
        if not self.cameras:
            raise ValueError("a critic needs at least one camera")
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got '{self.pooling}'")
        self.cnn_channels = tuple(self.cnn_channels)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["cnn_channels"] = list(self.cnn_channels)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "CriticConfig":
        return config_from_dict(cls, d, "critic")


class ProgressCritic(nn.Module):
    def __init__(self, config: CriticConfig):
        super().__init__()
        self.config = config
        f = config.image_features * len(config.cameras)
        self.encoders = nn.ModuleDict({c: ConvEncoder(config.cnn_channels, config.image_features, config.pooling, config.keypoints)
                                       for c in config.cameras})
        self.film = nn.Linear(config.text_dim, 2 * f)  # instruction -> per-feature scale and shift
        self.text_proj = nn.Sequential(nn.Linear(config.text_dim, config.hidden // 2), nn.SiLU())
        self.reference_proj = nn.Sequential(nn.Linear(f * config.reference_frames, config.hidden // 2), nn.SiLU())
        self.no_reference = nn.Parameter(torch.zeros(config.hidden // 2))
        context = config.hidden // 2 * 2
        self.pair_head = nn.Sequential(nn.Linear(3 * f + context, config.hidden), nn.LayerNorm(config.hidden), nn.SiLU(),
                                       nn.Linear(config.hidden, config.hidden), nn.SiLU(), nn.Linear(config.hidden, 1))
        self.done_head = nn.Sequential(nn.Linear(f + context, config.hidden), nn.LayerNorm(config.hidden), nn.SiLU(),
                                       nn.Linear(config.hidden, 1))
        self.register_buffer("pixel_mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("pixel_std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))
        nn.init.zeros_(self.film.weight)
        nn.init.zeros_(self.film.bias)

    def encode(self, images: dict[str, torch.Tensor]) -> torch.Tensor:
        """uint8 (N, H, W, 3) per camera -> features (N, F)."""
        parts = []
        for cam in self.config.cameras:
            x = images[cam].permute(0, 3, 1, 2).to(self.pixel_mean.dtype) / 255.0
            parts.append(self.encoders[cam]((x - self.pixel_mean) / self.pixel_std))
        return torch.cat(parts, dim=-1)

    def context(self, text: torch.Tensor, references: torch.Tensor | None, reference_mask: torch.Tensor | None):
        """Instruction and one-shot context (B, hidden); ``references`` are encoded features (B, K, F)."""
        t = self.text_proj(text)
        if references is None:
            r = self.no_reference.expand_as(t)
        else:
            r = self.reference_proj(references.flatten(1))
            m = reference_mask.to(r.dtype).unsqueeze(-1)
            r = m * r + (1 - m) * self.no_reference
        return torch.cat([t, r], dim=-1)

    def heads(self, early: torch.Tensor, late: torch.Tensor, text: torch.Tensor, context: torch.Tensor):
        """Encoded frames (B, F) -> (delta, done logit), both (B,)."""
        scale, shift = self.film(text).chunk(2, dim=-1)
        a, b = early * (1 + scale) + shift, late * (1 + scale) + shift
        s_ab = self.pair_head(torch.cat([a, b, b - a, context], dim=-1))
        s_ba = self.pair_head(torch.cat([b, a, a - b, context], dim=-1))
        delta = torch.tanh(s_ab - s_ba).squeeze(-1)
        done_logit = self.done_head(torch.cat([b, context], dim=-1)).squeeze(-1)
        return delta, done_logit

    def forward(self, early: dict[str, torch.Tensor], late: dict[str, torch.Tensor], text: torch.Tensor,
                references: dict[str, torch.Tensor] | None = None, reference_mask: torch.Tensor | None = None):
        """Deployment outputs: (delta (B,), done_prob (B,)). ``references``: uint8 (R, K, H, W, 3) per
        camera with R = 1 or B."""
        b = text.shape[0]
        ref_features = None
        if references is not None:
            k = self.config.reference_frames
            first = references[self.config.cameras[0]]
            r = first.shape[0]
            flat = {c: references[c].reshape(r * k, *references[c].shape[2:]) for c in self.config.cameras}
            ref_features = self.encode(flat).view(r, k, -1).expand(b, k, -1)
            if reference_mask is None:
                reference_mask = torch.ones(b, dtype=text.dtype, device=text.device)
        delta, done_logit = self.heads(self.encode(early), self.encode(late), text,
                                       self.context(text, ref_features, reference_mask))
        return delta, torch.sigmoid(done_logit)


class CriticExportWrapper(nn.Module):
    """Flat positional inputs in the order of ``input_names`` (what ONNX needs)."""

    def __init__(self, model: ProgressCritic):
        super().__init__()
        self.model = model
        self.cameras = list(model.config.cameras)

    def input_names(self) -> list[str]:
        c = self.cameras
        return [f"early_{x}" for x in c] + [f"late_{x}" for x in c] + ["instruction"] + [f"reference_{x}" for x in c] + ["reference_mask"]

    def forward(self, *inputs):
        n = len(self.cameras)
        early = dict(zip(self.cameras, inputs[:n]))
        late = dict(zip(self.cameras, inputs[n:2 * n]))
        text = inputs[2 * n]
        references = dict(zip(self.cameras, inputs[2 * n + 1:3 * n + 1]))
        return self.model(early, late, text, references, inputs[3 * n + 1])


CRITIC_OUTPUT_NAMES = ["delta", "done_prob"]
