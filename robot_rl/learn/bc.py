"""``robot-rl train-bc``: behaviour cloning of the VLA on episodes (oracle demos, kept interventions).

Reads top to bottom: the flat config, the loss, the loop. The policy's Gaussian is fitted by
negative log-likelihood in the normalised action space (so the mean learns the demonstrated chunk
and the state-independent log-std how far the demos spread around it); the value head regresses the
discounted success return, which gives PPO a warm critic. Images get random shifts (pad and crop,
as in DrQ), the cheapest augmentation that stops a small CNN memorising pixels.

With ``objects_coef`` > 0 (simulated demonstrations only: they record ``object_positions``), an
auxiliary head predicts every object's position from the image features alone and its squared error
joins the loss. The action loss teaches the encoder where the cube is only as well as the demonstrated
chunks need on average; pushing it onto the pad needs the cube's position to a few millimetres
(``docs/learning-benchmark.md`` item 24), and a 128x96 front camera sees the cube 5 pixels wide. The
head is training-only: it is kept in the checkpoint (for ``--resume``) and never exported.
``objects_in_cameras`` adds each camera's view of the objects to its targets (their positions in that
camera's frame, ``object_positions_in_<camera>``): a linear head from the wrist camera's features cannot
give world positions (the camera moves with the arm), but it can give the cube relative to the gripper,
which the wrist camera sees at about a millimetre per pixel when the fingers are near it (item 37).

A new policy may start its camera encoders from ``robot-rl pretrain-encoder`` (``init_encoders``,
``learn/pretrain.py``): encoders that already locate the objects on many layouts, the rest from scratch.

Checkpoints hold the model config and weights (normalisation included), the optimiser, the step and
the RNG state. They are written to a temporary file and renamed, so an interrupted run leaves the
previous checkpoint whole; ``--resume`` continues from it.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from robot_rl.data.dataset import DemoDataset
from robot_rl.policy.text import InstructionEncoder
from robot_rl.policy.vla import VLAConfig, VLAModel


@dataclass
class BCConfig:
    data: str | list[str]  # episode directories, one or several (learned from as one dataset)
    out: str  # checkpoint path (.pt)
    init: str | None = None  # start from this policy: an export directory or a train-bc checkpoint (fine-tuning)
    # a new policy whose camera encoders start from a pretrain-encoder checkpoint (learn/pretrain.py)
    init_encoders: str | None = None
    steps: int = 5000
    batch_size: int = 64
    lr: float = 3e-4
    weight_decay: float = 1e-4
    value_coef: float = 0.1
    objects_coef: float = 0.0  # auxiliary loss: the objects' positions from the image features (0: off)
    # the auxiliary head also predicts where each camera sees the objects (their positions in its frame):
    # for a wrist camera, relative to the gripper, at about a millimetre per pixel near contact
    objects_in_cameras: bool = False
    shift_pad: int = 4  # random-shift augmentation in pixels (0: off)
    eval_fraction: float = 0.05  # held-out samples for the loss we report
    until_success: bool = True  # cut demonstrations at success_step (DemoDataset: the settle tail is the critic's)
    checkpoint_every: int = 500
    seed: int = 0
    threads: int = 0  # torch CPU threads (0: torch's default)
    device: str = "auto"  # auto (a GPU when PyTorch sees one), cpu, cuda, cuda:N (learn/device.py)
    model: dict = field(default_factory=dict)  # VLAConfig fields (cameras, image size, joints come from the data)


def random_shift(images: torch.Tensor, pad: int, generator: torch.Generator) -> torch.Tensor:
    """Shift each uint8 (B, H, W, 3) frame by up to ``pad`` pixels, filling with edge pixels.

    Cropping an edge-padded frame at offset (dy, dx) is reading pixel (clamp(y + dy - pad), clamp(x +
    dx - pad)): one gather over the whole batch, in uint8 (a loop over padded float copies cost 12x
    as much, a quarter of a learner update's demo phase)."""
    if pad <= 0:
        return images
    b, h, w, _ = images.shape
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
    rows = (dy[:, None] - pad + torch.arange(h)).clamp(0, h - 1)
    cols = (dx[:, None] - pad + torch.arange(w)).clamp(0, w - 1)
    return images[torch.arange(b)[:, None, None], rows[:, :, None], cols[:, None, :]]


def shift_frames(images: dict[str, torch.Tensor], pad: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """``random_shift`` of every camera's frames, the cameras drawn in order from one ``generator``."""
    return {c: random_shift(v, pad, generator) for c, v in images.items()}


OBJECT_HEAD_LR_SCALE = 10.0  # the auxiliary head's learning rate, in units of the policy's


class ObjectPositionHead(nn.Module):
    """Training-only: every object's position (normalised by the data's statistics), linearly from the
    policy's image features, so that its gradient asks the encoder's keypoints to say where things are."""

    def __init__(self, features: int, mean: np.ndarray, std: np.ndarray):
        super().__init__()
        self.linear = nn.Linear(features, len(mean))
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32).clamp_min(1e-3))

    def positions(self, image_features: torch.Tensor) -> torch.Tensor:
        """The predicted positions in metres (B, 3 x objects), in the data's column order."""
        return self.linear(image_features) * self.std + self.mean

    def loss(self, image_features: torch.Tensor, objects: torch.Tensor) -> tuple[torch.Tensor, float]:
        """The squared error in normalised units, and the distance error in millimetres averaged over the objects."""
        predicted = self.linear(image_features)
        loss = F.mse_loss(predicted, (objects - self.mean) / self.std)
        metres = (predicted.detach() * self.std + self.mean - objects).view(len(objects), -1, 3).norm(dim=-1)
        return loss, float(metres.mean()) * 1e3


def bc_loss(model: VLAModel, images, joints, text, actions, returns, value_coef: float,
            objects: torch.Tensor | None = None, object_head: ObjectPositionHead | None = None, objects_coef: float = 0.0):
    seen = model.image_features(images)
    mean, log_std, value = model.forward_normalised(images, joints, text, seen)
    target = model.normalise_target(actions, joints)
    nll = 0.5 * ((target - mean) / log_std.exp()) ** 2 + log_std + 0.5 * math.log(2 * math.pi)
    policy_loss = nll.mean()
    value_loss = F.mse_loss(value, returns)
    mse = F.mse_loss(mean, target)
    loss = policy_loss + value_coef * value_loss
    parts = {"nll": policy_loss.item(), "mse": mse.item(), "value": value_loss.item()}
    if object_head is not None and objects is not None:
        object_loss, parts["objects_mm"] = object_head.loss(seen, objects)
        parts["objects"] = object_loss.item()
        loss = loss + objects_coef * object_loss
    return loss, parts


def to_tensors(batch, embeddings: dict[str, np.ndarray]):
    """(images, joints, text, actions, returns, objects or None) as tensors."""
    images = {c: torch.from_numpy(v) for c, v in batch.images.items()}
    text = torch.from_numpy(np.stack([embeddings[i] for i in batch.instructions]))
    objects = torch.from_numpy(batch.objects) if batch.objects is not None else None
    return (images, torch.from_numpy(batch.joints), text, torch.from_numpy(batch.actions),
            torch.from_numpy(batch.returns), objects)


def cosine_schedule(optimiser: torch.optim.Optimizer, steps: int, start_step: int):
    """The learning rate falls from its value to 0 along half a cosine over ``steps``; a resumed run
    (``start_step`` > 0) continues where the schedule was."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda s: 0.5 * (1 + math.cos(math.pi * min(1.0, (s + start_step) / max(1, steps)))))


def gradient_step(loss: torch.Tensor, optimiser: torch.optim.Optimizer, schedule, trained: list) -> None:
    """One clipped (norm 1) optimiser step and one step of the learning-rate schedule."""
    optimiser.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(trained, 1.0)
    optimiser.step()
    schedule.step()


def progress_bar(enabled: bool, steps: int, start_step: int, desc: str):
    """A tqdm bar over the training steps, or None."""
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=steps, initial=start_step, desc=desc, unit="step")


def save_checkpoint(path: str | Path, payload: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def read_checkpoint(path: str | Path, required: tuple[str, ...], kind: str) -> dict:
    """A checkpoint written by ``save_checkpoint``; names the file and the missing key otherwise."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{kind} checkpoint {path} does not exist")
    # weights_only: a checkpoint holds tensors, dicts, lists and numbers, nothing a file may execute
    payload = torch.load(path, map_location="cpu", weights_only=True)
    require_keys(payload, path, required, kind)
    return payload


def require_keys(payload: dict, path: str | Path, required: tuple[str, ...], kind: str) -> None:
    for key in required:
        if key not in payload:
            raise ValueError(f"checkpoint {path} lacks '{key}': not a robot_rl {kind} checkpoint")


VLA_CHECKPOINT_KEYS = ("model_config", "model", "instruction_embeddings")


def load_checkpoint(path: str | Path) -> dict:
    return read_checkpoint(path, VLA_CHECKPOINT_KEYS, "VLA")


def model_from_checkpoint(payload: dict) -> VLAModel:
    model = VLAModel(VLAConfig.from_dict(payload["model_config"]))
    model.load_state_dict(payload["model"])
    return model.eval()


def initial_model(path: str, requested: dict) -> VLAModel:
    """The policy to fine-tune: an export directory (``metadata.json`` + ``weights.safetensors``) or a
    train-bc checkpoint (``.pt``). Model settings asked for explicitly (``requested``) must be the
    starting policy's: fine-tuning cannot change the architecture or the action space."""
    from robot_rl.inference.weights import model_from_weights

    source = Path(path)
    if source.is_dir():
        meta_path, weights_path = source / "metadata.json", source / "weights.safetensors"
        for f in (meta_path, weights_path):
            if not f.is_file():
                raise FileNotFoundError(f"--init {source}: no {f.name} (expected a policy export directory)")
        model_config = json.loads(meta_path.read_text()).get("model_config")
        if not isinstance(model_config, dict):
            raise ValueError(f"--init {meta_path}: no 'model_config' (exports of robot_rl's VLA carry one)")
        model = model_from_weights(model_config, weights_path.read_bytes())
    else:
        model = model_from_checkpoint(load_checkpoint(source))
    ours = model.config.to_dict()
    differ = [f"{k} {v!r} (the policy has {ours.get(k)!r})" for k, v in requested.items()
              if v is not None and ours.get(k) != v]
    if differ:
        raise ValueError(f"--init {source}: {'; '.join(differ)}; fine-tuning keeps the starting policy's model")
    return model


def check_data_fits(config: VLAConfig, data: DemoDataset, init: str) -> None:
    """The demonstrations must show what the starting policy sees and command what it commands."""
    problems = []
    if data.joint_names != list(config.joint_names):
        problems.append(f"joints {data.joint_names} (the policy's: {list(config.joint_names)})")
    if tuple(data.image_size) != (config.image_height, config.image_width):
        problems.append(f"images {data.image_size[0]}x{data.image_size[1]} (the policy's: "
                        f"{config.image_height}x{config.image_width})")
    if abs(data.control_rate_hz - config.control_rate_hz) > 1e-6:
        problems.append(f"control rate {data.control_rate_hz} Hz (the policy's: {config.control_rate_hz} Hz)")
    if problems:
        raise ValueError(f"--init {init}: the demonstrations do not fit the policy: " + "; ".join(problems))


def train_bc(config: BCConfig, resume: bool = False, encoder: InstructionEncoder | None = None,
             progress: bool = True, log=print) -> dict:
    from robot_rl.learn.device import resolve_device, to_device

    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    device = resolve_device(config.device, what="train-bc --device")
    if config.objects_in_cameras and config.objects_coef <= 0:
        raise ValueError("--objects-in-cameras is a target of the auxiliary object loss: give --objects-coef W > 0 too")
    model_fields = dict(config.model)
    # a resumed fine-tuning reads the starting policy too: its model config is the checkpoint's
    start = initial_model(config.init, model_fields) if config.init else None
    if start is not None:
        model_fields = start.config.to_dict()
    pretrained_encoders = None
    if config.init_encoders:
        if start is not None:
            raise ValueError("--init-encoders starts a new policy; --init fine-tunes one whose encoders exist already")
        from robot_rl.learn.pretrain import load_encoders

        pretrained_encoders = load_encoders(config.init_encoders)
        # the encoders' settings unless asked for explicitly (apply_encoders then names what differs)
        model_fields = {**pretrained_encoders["encoder_config"],
                        **{k: v for k, v in model_fields.items() if v is not None}}
    data = DemoDataset(config.data, horizon=int(model_fields.get("chunk_length", VLAConfig.chunk_length)),
                       cameras=model_fields.get("cameras"), until_success=config.until_success,
                       objects_in_cameras=config.objects_in_cameras)
    if start is not None:
        check_data_fits(start.config, data, config.init)
    model_fields.update(cameras=data.cameras, joint_names=data.joint_names, image_height=data.image_size[0],
                        image_width=data.image_size[1], control_rate_hz=data.control_rate_hz)
    if model_fields.get("action_mode") == "cartesian" and not model_fields.get("arm_geometry"):
        from robot_rl.policy.arm_frame import simulated_arm_geometry

        model_fields["arm_geometry"] = simulated_arm_geometry().to_dict()
        log("action mode cartesian: the simulated tabletop arm's geometry (give a real arm's with --arm-geometry)")
    model_config = VLAConfig.from_dict(model_fields)
    model = start if start is not None else VLAModel(model_config, pretrained=pretrained_encoders is None)
    if pretrained_encoders is not None:
        from robot_rl.learn.pretrain import apply_encoders

        apply_encoders(model, pretrained_encoders, config.init_encoders)
        log(f"camera encoders from {config.init_encoders}")
    encoder = encoder or InstructionEncoder()
    embeddings = {i: encoder.encode(i) for i in data.instructions()}
    object_head = None
    if config.objects_coef > 0:
        stats = data.object_statistics()  # names the data when it has no object positions
        object_head = ObjectPositionHead(model_config.image_features * len(model_config.cameras), stats["mean"], stats["std"])
    model.to(device)  # before the optimiser is built on its parameters, and before a resume loads into them
    if object_head is not None:
        object_head.to(device)
    groups = [{"params": list(model.parameters())}]
    if object_head is not None:
        # the head starts from nothing while a fine-tuned policy moves at a small lr: at the policy's lr
        # it would still be far from a fit after a thousand steps, and its gradient would say little
        groups.append({"params": list(object_head.parameters()), "lr": config.lr * OBJECT_HEAD_LR_SCALE})
    trained = [p for group in groups for p in group["params"]]
    optimiser = torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay)
    start_step = 0
    rng = np.random.default_rng(config.seed)
    if resume and Path(config.out).is_file():
        payload = load_checkpoint(config.out)
        # through from_dict: fields added since the checkpoint was written take their defaults
        if VLAConfig.from_dict(payload["model_config"]).to_dict() != model_config.to_dict():
            raise ValueError(f"checkpoint {config.out} was trained with a different model config; "
                             "start a new one (another --out) or drop --resume")
        model.load_state_dict(payload["model"])
        if (object_head is not None) != ("object_head" in payload):
            raise ValueError(f"checkpoint {config.out} was trained {'without' if object_head is not None else 'with'} "
                             "the auxiliary object loss; resume it with the same --objects-coef")
        if object_head is not None:
            if payload["object_head"]["mean"].shape != object_head.mean.shape:
                raise ValueError(f"checkpoint {config.out} predicts {payload['object_head']['mean'].shape[0]} object "
                                 f"coordinates, this run {object_head.mean.shape[0]}: resume it with the same "
                                 "--objects-in-cameras")
            object_head.load_state_dict(payload["object_head"])
        optimiser.load_state_dict(payload["optimiser"])
        start_step = int(payload["step"])
        rng.bit_generator.state = payload["rng"]
        log(f"resuming {config.out} at step {start_step}")
    elif start is not None:
        # the starting policy's normalisation stays: its weights were learned in those units
        log(f"fine-tuning {config.init} ({sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters)")
    else:
        def action_target(chunks: np.ndarray, joints: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                return model.action_target(torch.as_tensor(chunks, dtype=torch.float32),
                                           torch.as_tensor(joints, dtype=torch.float32)).numpy()

        stats = data.statistics(action_target)
        model.set_normalisation(**stats)

    # a fixed held-out split (same on resume): the reported loss is on samples never trained on
    split = np.random.default_rng(config.seed + 1).permutation(len(data))
    n_eval = max(1, int(len(data) * config.eval_fraction))
    eval_rows, train_rows = split[:n_eval], split[n_eval:]
    generator = torch.Generator().manual_seed(config.seed + start_step)
    schedule = cosine_schedule(optimiser, config.steps, start_step)

    def checkpoint(step: int, metrics: dict) -> None:
        save_checkpoint(config.out, {
            "model_config": model_config.to_dict(), "model": model.state_dict(), "optimiser": optimiser.state_dict(),
            "step": step, "rng": rng.bit_generator.state, "bc_config": asdict(config), "metrics": metrics,
            "instruction_embeddings": {k: v.tolist() for k, v in embeddings.items()},
            "dataset": {"dir": data.dirs[0], "dirs": data.dirs, "episodes": len(data.episodes), "samples": len(data)},
            "init": config.init, "init_encoders": config.init_encoders,
            **({"object_head": object_head.state_dict()} if object_head is not None else {}),
        })

    def evaluate() -> dict:
        model.eval()
        with torch.no_grad():
            totals = {"nll": 0.0, "mse": 0.0, "value": 0.0, **({"objects_mm": 0.0} if object_head is not None else {})}
            chunks = np.array_split(eval_rows, max(1, math.ceil(len(eval_rows) / 256)))
            for rows in chunks:
                *batch, objects = to_device(to_tensors(data.batch(rows), embeddings), device)
                _, parts = bc_loss(model, *batch, config.value_coef, objects, object_head, config.objects_coef)
                for k in totals:
                    totals[k] += parts[k] * len(rows) / len(eval_rows)
        model.train()
        return totals

    bar = progress_bar(progress, config.steps, start_step, "train-bc")
    metrics = {"eval_start": evaluate()}
    model.train()
    for step in range(start_step, config.steps):
        rows = rng.choice(train_rows, size=min(config.batch_size, len(train_rows)), replace=False)
        images, joints, text, actions, returns, objects = to_tensors(data.batch(rows), embeddings)
        # shifted on the CPU with the CPU generator: the same draws on any device
        images = shift_frames(images, config.shift_pad, generator)
        images, joints, text, actions, returns, objects = to_device((images, joints, text, actions, returns, objects), device)
        loss, parts = bc_loss(model, images, joints, text, actions, returns, config.value_coef,
                              objects, object_head, config.objects_coef)
        gradient_step(loss, optimiser, schedule, trained)
        if bar:
            bar.update(1)
            bar.set_postfix(nll=f"{parts['nll']:.3f}", mse=f"{parts['mse']:.3f}",
                            **({"objects_mm": f"{parts['objects_mm']:.1f}"} if object_head is not None else {}))
        if (step + 1) % config.checkpoint_every == 0 or step + 1 == config.steps:
            metrics["train_last"] = parts
            checkpoint(step + 1, metrics)
    if bar:
        bar.close()
    metrics["eval_end"] = evaluate()
    checkpoint(max(config.steps, start_step), metrics)
    objects = (f"; object positions off by {metrics['eval_start']['objects_mm']:.1f} -> {metrics['eval_end']['objects_mm']:.1f} mm"
               if object_head is not None else "")
    log(f"held-out action mse {metrics['eval_start']['mse']:.4f} -> {metrics['eval_end']['mse']:.4f}{objects}; checkpoint {config.out}")
    return metrics
