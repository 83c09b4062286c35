"""The scripted oracle of the tabletop world behind the policy interface (simulation only)."""

from __future__ import annotations

import numpy as np

from robot_rl.policy.base import ActionChunk, Observation, Policy, PolicyConfig
from robot_rl.sim.oracle import OracleConfig, ScriptedOracle
from robot_rl.sim.tabletop import JOINT_NAMES


class OraclePolicy(Policy):
    name = "oracle"
    needs_privileged_state = True

    def __init__(self, config: PolicyConfig):
        super().__init__(config)
        self.oracle = ScriptedOracle.for_scene(
            config.control_period, OracleConfig(chunk_length=config.chunk_length), config.options.get("scene")
        )
        self.instruction: str | None = None

    def reset(self, instruction: str) -> None:
        self.oracle.reset(instruction)  # UnknownTaskError (a ValueError) names the known tasks
        self.instruction = instruction

    def act(self, observation: Observation) -> ActionChunk:
        if self.instruction is None:
            raise RuntimeError("oracle policy has no instruction yet; call reset(instruction) first")
        if not observation.objects:
            raise ValueError("the oracle policy needs privileged object poses (topic /sim/object_poses)")
        index = {name: i for i, name in enumerate(observation.joint_names)}
        missing = [n for n in JOINT_NAMES if n not in index]
        if missing:
            raise ValueError(f"joint state lacks joints {missing} that the oracle controls")
        q = np.asarray(observation.joint_positions)[[index[n] for n in JOINT_NAMES]]
        return ActionChunk(observation.stamp, self.config.control_period, list(JOINT_NAMES),
                           self.oracle.act(q, observation.objects))
