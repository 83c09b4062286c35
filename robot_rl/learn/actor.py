"""A simulated robot without ROS: runs a policy in the MuJoCo tabletop and records RL episodes.

It records exactly what ``episode_node`` records on a robot (``docs/episode-format.md``): per control
step the frames at policy resolution, the measured joints, the command executed, whether a human
gave it, and which policy version, observation and chunk position produced it. The learner cannot
tell its episodes from a robot's. Used by the learner tests and the benchmarks, where a whole ROS graph
per simulated robot would cost more than the learning.

The policy is queried every ``execute_steps`` control steps and the chunk's points are executed in
between (1: receding horizon, how the shipped default policy was evaluated).
"""

from __future__ import annotations


from robot_rl.data.episodes import Episode, EpisodeMeta, EpisodeWriter, new_episode_id
from robot_rl.policy.base import Observation, Policy
from robot_rl.sim.tabletop import TabletopWorld
from robot_rl.sim.tasks import TASKS, get_task
from robot_rl.sim.world import WorldConfig


class SimActor:
    def __init__(self, policy: Policy, cameras: list[str], image_width: int, image_height: int,
                 control_rate_hz: float = 10.0, execute_steps: int = 1, robot: str = "sim"):
        self.policy, self.cameras, self.execute_steps, self.robot = policy, list(cameras), max(1, execute_steps), robot
        self.world = TabletopWorld(WorldConfig(control_rate_hz=control_rate_hz, cameras=list(cameras),
                                               image_width=image_width, image_height=image_height))

    def episode(self, task: str, seed: int, max_steps: int | None = None) -> Episode:
        task = get_task(task).name
        w = self.world
        w.reset(seed, task)
        instruction = TASKS[task].instruction
        self.policy.reset(instruction)
        meta = EpisodeMeta(new_episode_id(task, seed), task, instruction, seed, False, "policy", list(self.cameras),
                           w.config.image_height, w.config.image_width, list(w.joint_names), w.config.control_rate_hz,
                           extra={"robot": self.robot})
        writer = EpisodeWriter("", meta)
        steps = max_steps or int(TASKS[task].max_duration_s * w.config.control_rate_hz)
        chunk, obs_step, version, k = None, -1, -1, 0
        success = False
        for t in range(steps):
            q = w.joint_positions()
            images = {c: w.render(c) for c in self.cameras}
            if chunk is None or k >= min(self.execute_steps, chunk.horizon):
                obs = Observation(w.time, list(w.joint_names), q, instruction, images, w.object_poses())
                chunk = self.policy.act(obs)
                order = [chunk.joint_names.index(n) for n in w.joint_names]
                # the chunk says which weights made it (a swap may land between act() and here)
                version = chunk.version if chunk.version >= 0 else int(getattr(self.policy, "version_number", 0))
                obs_step, k = t, 0
            target = chunk.positions[k][order]
            writer.add(images, q, target, w.time, extras={"policy_version": version, "obs_step": obs_step,
                                                          "chunk_step": k, "progress": w.task_progress()})
            w.step(target)
            k += 1
            if w.success():
                success = True  # ground truth: only reported (meta.success), the learner uses the critic
                break
        return writer.episode(success)

    def close(self) -> None:
        self.world.close()
