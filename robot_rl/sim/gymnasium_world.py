"""Any gymnasium environment with image observations behind the sim bridge's topics.

The adapter finds camera images in the observation (every (H, W, 3) uint8 array, nested dicts
flattened with ``_``; or the keys given in ``image_keys``), takes the state vector from
``state_key`` (``agent_pos`` and ``observation.state`` are tried by default) as the joint state, and
passes ``/robot/command`` to ``env.step`` as the action vector, clipped to the action space. Joint
names are ``state_<i>`` and command names ``action_<i>`` unless the environment's ``spec`` says
otherwise; gymnasium environments do not publish intrinsics, so ``camera_info`` assumes
``fovy_deg`` (45 by default). Success is read from ``info["is_success"]`` or ``info["success"]``.
When an episode terminates, the world holds its last observation until ``/sim/reset``.

Example (gym-hil, when installed): world ``gymnasium``, ``gym_env_id`` ``gym_hil/PandaPickCubeBase-v0``.
"""

from __future__ import annotations

import math
import re

import numpy as np

from robot_rl.sim.world import CameraModel, World, WorldConfig

_STATE_KEYS = ("agent_pos", "observation.state", "state")


def _flatten(obs, prefix: str = "") -> dict[str, np.ndarray]:
    if isinstance(obs, dict):
        out = {}
        for key, value in obs.items():
            out.update(_flatten(value, f"{prefix}{key}_" if isinstance(value, dict) else f"{prefix}{key}"))
        return out
    return {prefix.rstrip("_") or "obs": np.asarray(obs)}


def _topic_name(key: str) -> str:
    return re.sub(r"[^a-z0-9_]", "_", key.lower()).strip("_") or "camera"


class GymnasiumWorld(World):
    def __init__(self, env, control_period: float = 0.1, image_keys: list[str] | None = None,
                 state_key: str | None = None, fovy_deg: float = 45.0):
        self.env = env
        self.control_period = control_period
        self.fovy = math.radians(fovy_deg)
        self._steps = 0
        self._seed = 0
        self._success: bool | None = None
        self._done = False
        obs, info = self.env.reset(seed=0)
        flat = _flatten(obs)
        if image_keys:
            missing = [k for k in image_keys if k not in flat]
            if missing:
                raise ValueError(f"gymnasium observation has no image keys {missing}; it has {sorted(flat)}")
            self.image_keys = list(image_keys)
        else:
            self.image_keys = [k for k, v in flat.items() if v.dtype == np.uint8 and v.ndim == 3 and v.shape[2] == 3]
        if not self.image_keys:
            raise ValueError(f"gymnasium observation has no (H, W, 3) uint8 images; keys: {sorted(flat)}")
        self.state_key = state_key or next((k for k in _STATE_KEYS if k in flat), None)
        if self.state_key is None or self.state_key not in flat:
            raise ValueError(f"gymnasium observation has no state vector (tried {state_key or _STATE_KEYS}); keys: {sorted(flat)}")
        self.camera_names = [_topic_name(k) for k in self.image_keys]
        self.joint_names = [f"state_{i}" for i in range(flat[self.state_key].size)]
        shape = self.env.action_space.shape
        if shape is None or len(shape) != 1:
            raise ValueError(f"gymnasium action space must be a flat Box, got {self.env.action_space}")
        self.command_names = [f"action_{i}" for i in range(shape[0])]
        self._obs = flat
        self._read_success(info)

    @classmethod
    def from_config(cls, config: WorldConfig) -> "GymnasiumWorld":
        import gymnasium

        env_id = config.extra.get("env_id")
        if not env_id:
            raise ValueError("world 'gymnasium' needs parameter gym_env_id (e.g. gym_hil/PandaPickCubeBase-v0)")
        env = gymnasium.make(env_id, **config.extra.get("env_kwargs", {}))
        return cls(env, 1.0 / config.control_rate_hz, config.extra.get("image_keys") or None,
                   config.extra.get("state_key") or None)

    def _read_success(self, info: dict) -> None:
        for key in ("is_success", "success"):
            if key in info:
                self._success = bool(self._success or info[key])

    def reset(self, seed: int, task: str | None = None) -> None:
        obs, info = self.env.reset(seed=int(seed))
        self._seed, self._steps, self._done, self._success = int(seed), 0, False, None
        self._obs = _flatten(obs)
        self._read_success(info)

    def step(self, command: np.ndarray) -> None:
        if self._done:
            return
        command = np.asarray(command, dtype=np.float64)
        if command.shape != (len(self.command_names),) or not np.all(np.isfinite(command)):
            raise ValueError(f"command must be {len(self.command_names)} finite action values, got {command!r}")
        space = self.env.action_space
        action = np.clip(command, space.low, space.high).astype(space.dtype)
        obs, _, terminated, truncated, info = self.env.step(action)
        self._obs = _flatten(obs)
        self._steps += 1
        self._read_success(info)
        self._done = bool(terminated or truncated)

    def joint_positions(self) -> np.ndarray:
        return self._obs[self.state_key].astype(np.float64).reshape(-1)

    def joint_velocities(self) -> np.ndarray:
        return np.zeros(len(self.joint_names))

    def hold_command(self) -> np.ndarray:
        """What to send before anyone commands: zeros, clipped into the action space."""
        space = self.env.action_space
        return np.clip(np.zeros(len(self.command_names)), space.low, space.high)

    def render(self, camera: str) -> np.ndarray:
        return np.ascontiguousarray(self._obs[self.image_keys[self.camera_names.index(camera)]])

    def camera_model(self, camera: str) -> CameraModel:
        h, w = self.render(camera).shape[:2]
        f = 0.5 * h / math.tan(self.fovy / 2)
        return CameraModel(w, h, f, f, (w - 1) / 2, (h - 1) / 2)

    @property
    def time(self) -> float:
        return self._steps * self.control_period

    def success(self) -> bool | None:
        return self._success

    def close(self) -> None:
        self.env.close()
