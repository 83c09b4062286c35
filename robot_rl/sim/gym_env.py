"""The tabletop world as a gymnasium environment: ``gymnasium.make("robot_rl.sim.gym_env:robot_rl/Tabletop-v0")``.

Observation: ``{"pixels": {camera: (H, W, 3) uint8}, "agent_pos": joint positions}``; action: joint
position targets; reward 1 and ``terminated`` on success; ``info["is_success"]``. This lets
gymnasium tooling use the world, and it is the environment the gymnasium adapter is tested against.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from robot_rl.sim.tabletop import TabletopWorld
from robot_rl.sim.tasks import get_task
from robot_rl.sim.world import WorldConfig


class TabletopEnv(gym.Env):
    metadata = {"render_modes": ["rgb_array"]}

    def __init__(self, task: str = "pick_cube", image_width: int = 64, image_height: int = 48,
                 cameras: tuple[str, ...] = ("front", "wrist"), control_rate_hz: float = 10.0,
                 render_mode: str | None = "rgb_array"):
        self.world = TabletopWorld(WorldConfig(control_rate_hz=control_rate_hz, cameras=list(cameras),
                                               image_width=image_width, image_height=image_height))
        self.task = get_task(task).name
        self.render_mode = render_mode
        n = len(self.world.joint_names)
        self.action_space = spaces.Box(self.world.ctrl_low.astype(np.float32), self.world.ctrl_high.astype(np.float32))
        image = spaces.Box(0, 255, (image_height, image_width, 3), np.uint8)
        self.observation_space = spaces.Dict({
            "pixels": spaces.Dict({c: image for c in cameras}),
            "agent_pos": spaces.Box(-np.inf, np.inf, (n,), np.float32),
        })

    def _obs(self) -> dict:
        return {"pixels": {c: self.world.render(c) for c in self.world.camera_names},
                "agent_pos": self.world.joint_positions().astype(np.float32)}

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.world.reset(int(self.np_random.integers(2**31)) if seed is None else seed, self.task)
        return self._obs(), {"is_success": False}

    def step(self, action):
        self.world.step(np.asarray(action, dtype=np.float64))
        success = bool(self.world.success())
        return self._obs(), float(success), success, False, {"is_success": success}

    def render(self):
        return self.world.render(self.world.camera_names[0])

    def close(self):
        self.world.close()


ENV_ID = "robot_rl/Tabletop-v0"
if ENV_ID not in gym.registry:
    gym.register(id=ENV_ID, entry_point=TabletopEnv, max_episode_steps=100)
