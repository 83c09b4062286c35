"""``robot-rl pretrain-encoder``: teach the camera encoders where things are before any action is learned.

VLAC's policy starts at about 30% on a new task but it is a pretrained VLA: it already sees the scene.
A policy trained from scratch on 20 demonstrations per task sees only what 80 episodes' layouts taught
its encoders (``docs/learning-benchmark.md`` items 25-27: its image features place the cube within
about 25 mm on new layouts, where pushing needs about 5). This stage gives the encoders that prior
without giving away the task: it trains each camera's encoder, and a linear head on their
concatenated features, to predict every object's position from frames of many layouts. No action,
instruction or success enters the loss. ``train-bc --init-encoders`` then starts a new policy from
these encoders; the export is an ordinary VLA (same architecture, same ONNX contract).

The frames come from any episodes that record ``object_positions`` (``robot-rl collect`` writes them
in simulation); the benchmark's recipe uses the noisy oracle on layouts no demonstration or evaluation
uses (``collect --behaviour noisy --keep-failures --seed 50000``), so the frames show the arm near,
on and away from the objects, and episodes that fail. Ground-truth positions exist in simulation
only: on a robot the same role is played by a pretrained backbone (``encoder: efficientnet_lite0`` or
``timm:<name>``), or by positions from a calibrated tracker.

Held-out loss: whole episodes are held out (``eval_fraction``), so the reported error is on layouts
the encoders never saw. Checkpoints are written atomically and ``--resume`` continues one.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from robot_rl.data.dataset import DemoDataset
from robot_rl.learn.bc import (ObjectPositionHead, cosine_schedule, gradient_step, progress_bar, read_checkpoint,
                               save_checkpoint, shift_frames)
from robot_rl.policy.vla import VLAConfig, VLAModel

# the VLAConfig fields that decide an encoder's weights (names and shapes) and what it sees
ENCODER_FIELDS = ("cameras", "image_height", "image_width", "encoder", "cnn_channels", "image_features", "pooling",
                  "keypoints", "pretrained_stages", "freeze_pretrained")


@dataclass
class PretrainConfig:
    data: str | list[str]  # episode directories whose episodes record object_positions
    out: str  # checkpoint path (.pt)
    steps: int = 2000
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    shift_pad: int = 4  # random-shift augmentation in pixels, as train-bc's
    eval_fraction: float = 0.05  # whole episodes held out
    checkpoint_every: int = 500
    seed: int = 0
    threads: int = 0  # torch CPU threads (0: torch's default)
    device: str = "auto"
    # VLAConfig fields of the encoders (pooling, keypoints, cnn_channels, ...); cameras and image size
    # come from the data
    model: dict = field(default_factory=lambda: {"pooling": "spatial_softmax"})


def load_encoders(path: str | Path) -> dict:
    """A pretrain-encoder checkpoint: ``encoder_config`` (the VLAConfig fields of ``ENCODER_FIELDS``) and
    ``encoders`` (the camera encoders' weights, ``VLAModel.encoders``)."""
    return read_checkpoint(path, ("encoder_config", "encoders"), "pretrained-encoder")


def encoder_fields(model_config: dict) -> dict:
    return {k: model_config[k] for k in ENCODER_FIELDS if k in model_config}


def apply_encoders(model: VLAModel, payload: dict, source: str) -> None:
    """Load pretrained encoder weights into a new model whose encoder fields must be the checkpoint's."""
    ours = encoder_fields(model.config.to_dict())
    theirs = encoder_fields(VLAConfig.from_dict({**model.config.to_dict(), **payload["encoder_config"]}).to_dict())
    differ = [f"{k} {ours[k]!r} (the encoders': {theirs[k]!r})" for k in ENCODER_FIELDS if ours[k] != theirs[k]]
    if differ:
        raise ValueError(f"--init-encoders {source}: the new policy's {'; '.join(differ)}")
    model.encoders.load_state_dict(payload["encoders"])


def split_episodes(data: DemoDataset, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, held-out rows) with every row of a held-out episode held out."""
    episodes = np.random.default_rng(seed + 1).permutation(len(data.episodes))
    held = set(episodes[: max(1, int(round(len(episodes) * fraction)))].tolist())
    in_held = np.array([i in held for i in data.index[:, 0]])
    rows = np.arange(len(data))
    return rows[~in_held], rows[in_held]


def pretrain_encoders(config: PretrainConfig, resume: bool = False, progress: bool = True, log=print) -> dict:
    from robot_rl.learn.device import resolve_device, to_device

    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    device = resolve_device(config.device, what="pretrain-encoder --device")
    data = DemoDataset(config.data, horizon=1, cameras=config.model.get("cameras"), only_success=False,
                       until_success=False)
    stats = data.object_statistics()  # names the data when its episodes do not record object positions
    if len(data.episodes) < 2:
        raise ValueError(f"{', '.join(data.dirs)}: pretraining holds out whole episodes and needs at least 2")
    fields = {**config.model, "cameras": data.cameras, "joint_names": data.joint_names,
              "image_height": data.image_size[0], "image_width": data.image_size[1]}
    model = VLAModel(VLAConfig.from_dict(fields), pretrained=True)
    encoder_config = encoder_fields(model.config.to_dict())
    head = ObjectPositionHead(model.config.image_features * len(data.cameras), stats["mean"], stats["std"])
    model.to(device)
    head.to(device)
    trained = [p for p in model.encoders.parameters() if p.requires_grad] + list(head.parameters())
    optimiser = torch.optim.AdamW(trained, lr=config.lr, weight_decay=config.weight_decay)
    rng = np.random.default_rng(config.seed)
    start_step = 0
    if resume and Path(config.out).is_file():
        payload = load_encoders(config.out)
        if payload["encoder_config"] != encoder_config:
            raise ValueError(f"checkpoint {config.out} has encoders {payload['encoder_config']}, not {encoder_config}; "
                             "start a new one (another --out) or drop --resume")
        model.encoders.load_state_dict(payload["encoders"])
        head.load_state_dict(payload["object_head"])
        optimiser.load_state_dict(payload["optimiser"])
        start_step, rng.bit_generator.state = int(payload["step"]), payload["rng"]
        log(f"resuming {config.out} at step {start_step}")
    train_rows, eval_rows = split_episodes(data, config.eval_fraction, config.seed)
    generator = torch.Generator().manual_seed(config.seed + start_step)
    schedule = cosine_schedule(optimiser, config.steps, start_step)

    def batch(rows: np.ndarray, shift: bool):
        b = data.batch(rows)
        images = {c: torch.from_numpy(v) for c, v in b.images.items()}
        if shift:  # on the CPU with the CPU generator: the same draws on any device
            images = shift_frames(images, config.shift_pad, generator)
        return to_device((images, torch.from_numpy(b.objects)), device)

    def evaluate() -> dict:
        model.eval()
        loss = mm = 0.0
        with torch.no_grad():
            for rows in np.array_split(eval_rows, max(1, math.ceil(len(eval_rows) / 256))):
                images, objects = batch(rows, shift=False)
                part, part_mm = head.loss(model.image_features(images), objects)
                loss += part.item() * len(rows) / len(eval_rows)
                mm += part_mm * len(rows) / len(eval_rows)
        model.train()
        return {"objects": loss, "objects_mm": mm}

    def checkpoint(step: int, metrics: dict) -> None:
        save_checkpoint(config.out, {
            "encoder_config": encoder_config, "encoders": model.encoders.state_dict(), "object_head": head.state_dict(),
            "optimiser": optimiser.state_dict(), "step": step, "rng": rng.bit_generator.state,
            "pretrain_config": asdict(config), "metrics": metrics,
            "dataset": {"dirs": data.dirs, "episodes": len(data.episodes), "frames": len(data),
                        "held_out_frames": len(eval_rows)},
        })

    bar = progress_bar(progress, config.steps, start_step, "pretrain-encoder")
    metrics = {"eval_start": evaluate()}
    model.train()
    for step in range(start_step, config.steps):
        images, objects = batch(rng.choice(train_rows, size=min(config.batch_size, len(train_rows)), replace=False), True)
        loss, mm = head.loss(model.image_features(images), objects)
        gradient_step(loss, optimiser, schedule, trained)
        if bar:
            bar.update(1)
            bar.set_postfix(objects_mm=f"{mm:.1f}")
        if (step + 1) % config.checkpoint_every == 0 or step + 1 == config.steps:
            metrics["train_last"] = {"objects": loss.item(), "objects_mm": mm}
            checkpoint(step + 1, metrics)
    if bar:
        bar.close()
    metrics["eval_end"] = evaluate()
    checkpoint(max(config.steps, start_step), metrics)
    log(f"held-out object positions (episodes never trained on) off by {metrics['eval_start']['objects_mm']:.1f} -> "
        f"{metrics['eval_end']['objects_mm']:.1f} mm; checkpoint {config.out}")
    return metrics
