"""Success rate of a policy in the simulated world, on fixed evaluation seeds (no ROS in the loop).

The policy is queried at every control step and the target for the next step comes from an
:class:`ActionScheduler` (``latest``: the newest chunk's first target, receding horizon; ``ensemble``:
ACT's temporal ensembling over every chunk that covers the step); the world renders the cameras the policy
asks for at the size it was trained on. Evaluation seeds start at 10_000 so they never coincide with
the demonstration seeds of ``robot-rl collect`` (which start at 0).
"""

from __future__ import annotations

import numpy as np

from robot_rl.policy.base import Observation, Policy
from robot_rl.policy.scheduler import ActionScheduler
from robot_rl.sim.tabletop import TabletopWorld
from robot_rl.sim.tasks import TASKS, get_task
from robot_rl.sim.world import WorldConfig

EVAL_SEED = 10_000


def evaluate_policy(policy: Policy, cameras: list[str], image_width: int, image_height: int, control_rate_hz: float,
                    tasks: list[str] | None = None, episodes: int = 10, seed: int = EVAL_SEED, merge: str = "latest",
                    progress=None) -> dict:
    tasks = [get_task(t).name for t in (tasks or list(TASKS))]
    world = TabletopWorld(WorldConfig(control_rate_hz=control_rate_hz, cameras=list(cameras),
                                      image_width=image_width, image_height=image_height))
    results: dict[str, list[bool]] = {t: [] for t in tasks}
    try:
        for task in tasks:
            for i in range(episodes):
                world.reset(seed + i, task)
                policy.reset(TASKS[task].instruction)
                scheduler = ActionScheduler(world.control_period, merge)
                ok = False
                for _ in range(int(TASKS[task].max_duration_s * control_rate_hz)):
                    obs = Observation(world.time, list(world.joint_names), world.joint_positions(), TASKS[task].instruction,
                                      {c: world.render(c) for c in cameras}, world.object_poses())
                    chunk = policy.act(obs)
                    scheduler.add(chunk, now=world.time)
                    index = {n: k for k, n in enumerate(chunk.joint_names)}
                    world.step(scheduler.next_target(world.time)[[index[n] for n in world.joint_names]])
                    if world.success():
                        ok = True
                        break
                results[task].append(ok)
                if progress:
                    progress(task, seed + i, ok)
    finally:
        world.close()
    per_task = {t: float(np.mean(r)) for t, r in results.items()}
    return {"seeds": [seed, seed + episodes - 1], "episodes_per_task": episodes, "merge": merge, "per_task": per_task,
            "mean": float(np.mean(list(per_task.values())))}
