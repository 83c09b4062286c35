"""An exported policy (``policy.onnx`` + ``metadata.json``) behind the :class:`Policy` interface.

Options (``PolicyConfig.options``): ``path`` the export directory, ``backend`` one of
``auto | torch | onnxruntime | tensorrt``, ``resize`` (default False) to scale camera frames of
another size to the trained size (box filter for integer factors, e.g. 640x480 -> 128x96, else
nearest neighbour); without it a frame of the wrong size is refused. The instruction is embedded once per ``reset`` (from the
export's table of trained instructions when it is there, else by the sentence encoder). Each ``act``
checks the observation against the export contract (cameras, image size, joints) and the outputs
(finite, within the joint limits' neighbourhood); any violation is a ValueError, so the node skips
the frame and the safety layer holds.

For reinforcement learning: ``explore`` (default False) samples each chunk from the policy's Gaussian
(the mean plus ``exp(action_log_std) * action_std`` noise; ``explore_seed`` seeds it) instead of taking
the mean; the noise is in the units the network predicts in, so for a ``cartesian`` export it moves the
grip point and the arm's inverse kinematics turns that into joints (``arm_frame.py``; this needs
torch). ``explore_noise`` says how: ``step`` (default) draws every chunk point and dimension
independently, ``chunk`` draws one number per dimension and moves every point of the chunk by that
many of its own standard deviations (a consistent push over the chunk's steps, which the arm's
position control does not average away). The learner must take log-probabilities the same way
(``ppo.exploration``; episodes record it in ``meta.extra["exploration"]``). :meth:`VLAPolicy.load_weights` swaps in weights the learner published (a versioned
safetensors state dict of the same architecture): the new backend is built first, then replaces the
old one in a single assignment, so a control tick never waits for it and never sees half of it.
``version_number`` is the learner version in use (0: the export's own weights).
"""

from __future__ import annotations

import numpy as np

from robot_rl.policy.base import ActionChunk, Observation, Policy, PolicyConfig
from robot_rl.policy.text import InstructionEncoder

# How an exploring policy draws a chunk from ``action_log_std`` (``act``), and so how the
# learner takes its log-probability (``learn/ppo.py`` section 9): "step", an independent draw per
# chunk point and dimension; "chunk", one draw per dimension for the whole chunk (each point moved
# by the same number of its own standard deviations), a consistent offset over the chunk's steps.
EXPLORATION_NOISES = ("step", "chunk")

#: outputs further than this outside the joint limits (rad / m) mean the model is broken, not just
#: optimistic: the chunk is refused instead of being clamped by the safety layer
OUT_OF_RANGE_MARGIN = 0.5


class VLAPolicy(Policy):
    name = "vla"

    def __init__(self, config: PolicyConfig):
        super().__init__(config)
        from robot_rl.inference.backends import make_backend

        path = config.options.get("path")
        if not path:
            raise ValueError("policy 'vla' needs option 'path' (the exported policy directory, e.g. policies/sim_default)")
        self._running = (make_backend(config.options.get("backend", "auto"), path), 0)  # (backend, version)
        m = self.backend.metadata
        self.metadata = m
        self.version = str(m.get("model_version", "unknown"))
        self.cameras = list(m["cameras"])
        self.image_shape = (m["image_height"], m["image_width"], 3)
        self.joint_names = list(m["joint_names"])
        self.period = 1.0 / float(m["control_rate_hz"])
        self.encoder = InstructionEncoder({k: np.asarray(v, np.float32) for k, v in m.get("instruction_embeddings", {}).items()})
        self.instruction_vec: np.ndarray | None = None
        self.resize = bool(config.options.get("resize", False))
        self.backend_kind = config.options.get("backend", "auto")
        self.path = path
        self._retired = None  # the backend replaced by the last weight swap
        self.explore = bool(config.options.get("explore", False))
        self.explore_noise = str(config.options.get("explore_noise", "step"))
        if self.explore_noise not in EXPLORATION_NOISES:
            raise ValueError(f"policy 'vla' option explore_noise {self.explore_noise!r}: expected one of {EXPLORATION_NOISES}")
        self.noise = np.random.default_rng(config.options.get("explore_seed"))
        self.action_std = np.asarray(m.get("normalisation", {}).get("action_std", 1.0), np.float64)
        self.geometry = None
        if m.get("action_mode") == "cartesian":
            from robot_rl.policy.arm_frame import ArmGeometry

            self.geometry = ArmGeometry.from_dict(m.get("model_config", {}).get("arm_geometry") or {})
        self.lower = self.upper = None
        if config.joint_names:
            if set(config.joint_names) != set(self.joint_names):
                raise ValueError(f"exported policy {path} commands joints {self.joint_names}, the robot has {config.joint_names}")
            if config.lower and config.upper:  # limits in the model's joint order
                order = [config.joint_names.index(n) for n in self.joint_names]
                self.lower = np.asarray(config.lower, np.float64)[order]
                self.upper = np.asarray(config.upper, np.float64)[order]

    @property
    def exploration(self) -> str | None:
        """How ``act`` draws its noise (``explore_noise``), None when it does not explore: what an
        episode records for the learner (``meta.extra["exploration"]``)."""
        return self.explore_noise if self.explore else None

    def reset(self, instruction: str) -> None:
        self.instruction_vec = self.encoder.encode(instruction)[None, :]

    def inputs(self, observation: Observation) -> dict[str, np.ndarray]:
        feed = {}
        for cam in self.cameras:
            image = observation.images.get(cam)
            if image is None:
                raise ValueError(f"policy needs camera '{cam}' (has {sorted(observation.images)})")
            if self.resize and image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8:
                image = resize_rgb(image, *self.image_shape[:2])
            if image.shape != self.image_shape or image.dtype != np.uint8:
                raise ValueError(f"camera '{cam}' frame is {image.shape} {image.dtype}; the policy was trained on "
                                 f"{self.image_shape} uint8 RGB (set the camera or sim to {self.image_shape[1]}x{self.image_shape[0]}, "
                                 "or enable resizing: policy node parameter resize_images)")
            feed[f"image_{cam}"] = np.ascontiguousarray(image)[None]
        index = {n: i for i, n in enumerate(observation.joint_names)}
        missing = [n for n in self.joint_names if n not in index]
        if missing:
            raise ValueError(f"joint state lacks joints {missing} that the policy commands")
        q = np.asarray(observation.joint_positions, np.float32)[[index[n] for n in self.joint_names]]
        feed["joint_positions"] = q[None]
        feed["instruction"] = self.instruction_vec
        return feed

    def act(self, observation: Observation) -> ActionChunk:
        if self.instruction_vec is None:
            raise RuntimeError("vla policy has no instruction yet; call reset(instruction) first")
        backend, version = self._running  # one read: a swap between them would mislabel the chunk
        feed = self.inputs(observation)
        out = backend.run(feed)
        actions = np.asarray(out["actions"][0], np.float64)
        if not np.all(np.isfinite(actions)):
            raise ValueError(f"policy output is not finite (backend {backend.describe()}): nothing is sent")
        if self.lower is not None:
            low, high = self.lower - OUT_OF_RANGE_MARGIN, self.upper + OUT_OF_RANGE_MARGIN
            bad = np.any((actions < low) | (actions > high), axis=0)
            if bad.any():
                names = [n for n, b in zip(self.joint_names, bad) if b]
                raise ValueError(f"policy output for joints {names} is more than {OUT_OF_RANGE_MARGIN} outside the joint limits")
        if self.explore:
            std = np.exp(np.asarray(out["action_log_std"][0], np.float64)) * self.action_std
            draw = self.noise.standard_normal(std.shape if self.explore_noise == "step" else std.shape[-1:])
            noise = std * draw  # "chunk": one draw per dimension, broadcast over the chunk's points
            if self.geometry is None:
                actions = actions + noise
            else:
                actions = self._move_in_arm_frame(feed["joint_positions"][0], actions, noise)
        self.last_value = float(out["value"][0])
        return ActionChunk(observation.stamp, self.period, list(self.joint_names), actions, version=version)

    def _move_in_arm_frame(self, q: np.ndarray, actions: np.ndarray, noise: np.ndarray) -> np.ndarray:
        """Joint targets whose arm-frame chunk points are those of ``actions`` plus ``noise`` (H, 5)."""
        import torch

        from robot_rl.policy.arm_frame import to_points, to_targets

        q_t = torch.as_tensor(q, dtype=torch.float64)[None]
        points = to_points(self.geometry, q_t, torch.as_tensor(actions, dtype=torch.float64)[None])
        return to_targets(self.geometry, q_t, points + torch.as_tensor(noise)[None])[0].numpy()

    def load_weights(self, version: int, model_config: dict, safetensors_bytes: bytes, workdir: str | None = None) -> None:
        """Swap in published weights (see the module docstring); ValueError when they do not fit."""
        from robot_rl.inference.weights import backend_from_weights
        from robot_rl.transport.messages import architecture_fingerprint

        ours = self.metadata.get("model_config")
        if ours is None or architecture_fingerprint(model_config) != architecture_fingerprint(ours):
            raise ValueError(f"weights v{version} are for another architecture than the running policy {self.path} "
                             "(different cameras, image size, joints, chunk length or layer sizes): not loaded")
        backend = backend_from_weights(self.backend_kind, self.metadata, model_config, safetensors_bytes, version, workdir,
                                       export_dir=self.path)
        retired = self.backend
        self._running = (backend, int(version))
        self.version = f"{self.metadata.get('model_version', 'export')}+learner-v{version}"
        # a tick may still be running on the old backend: it is closed at the next swap, not now
        if self._retired is not None:
            self._retired.close()
        self._retired = retired

    @property
    def backend(self):
        return self._running[0]

    @property
    def version_number(self) -> int:
        return self._running[1]

    @version_number.setter
    def version_number(self, version: int) -> None:
        """Label the running weights (e.g. an export that is a learner's version N)."""
        self._running = (self._running[0], int(version))

    def close(self) -> None:
        self.backend.close()


def resize_rgb(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Scale an (H, W, 3) uint8 frame: box average for integer down-scaling factors, else nearest."""
    h, w = image.shape[:2]
    if (h, w) == (height, width):
        return image
    if h % height == 0 and w % width == 0:
        fy, fx = h // height, w // width
        return image.reshape(height, fy, width, fx, 3).mean(axis=(1, 3)).round().astype(np.uint8)
    rows = (np.arange(height) * h / height + h / height / 2).astype(int).clip(0, h - 1)
    cols = (np.arange(width) * w / width + w / width / 2).astype(int).clip(0, w - 1)
    return image[rows][:, cols]
