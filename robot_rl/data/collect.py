"""``robot-rl collect``: demonstrations from the scripted oracle in the MuJoCo tabletop world.

Each episode: reset the world with a seed and task, then at every control step render the cameras,
read the joints, ask the oracle for its next target and step the world with it, recording what was
seen and commanded. After success the episode goes on for ``settle_steps`` more steps so that the
demonstrations also show the arm staying at the goal. Failed episodes are dropped unless asked for.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from robot_rl.data.episodes import EpisodeMeta, EpisodeWriter, new_episode_id
from robot_rl.sim.oracle import ArmKinematics, ScriptedOracle
from robot_rl.sim.tabletop import TabletopWorld
from robot_rl.sim.tasks import TASKS, get_task
from robot_rl.sim.world import WorldConfig


@dataclass
class CollectConfig:
    out: str
    tasks: list[str] = field(default_factory=lambda: list(TASKS))
    episodes: int = 10  # per task
    seed: int = 0  # episode i of a task uses seed + i
    cameras: list[str] = field(default_factory=lambda: ["front", "wrist"])
    image_width: int = 128
    image_height: int = 96
    control_rate_hz: float = 10.0
    settle_steps: int = 5
    keep_failures: bool = False


def collect(config: CollectConfig, progress=None) -> dict:
    """Write demonstrations; returns {task: {"written": n, "failed": n}}."""
    tasks = [get_task(t).name for t in config.tasks]  # UnknownTaskError names the valid tasks
    Path(config.out).mkdir(parents=True, exist_ok=True)
    world = TabletopWorld(WorldConfig(control_rate_hz=config.control_rate_hz, cameras=list(config.cameras),
                                      image_width=config.image_width, image_height=config.image_height))
    oracle = ScriptedOracle(ArmKinematics.from_model(world.model), world.control_period)
    summary = {t: {"written": 0, "failed": 0} for t in tasks}
    try:
        for task in tasks:
            for i in range(config.episodes):
                seed = config.seed + i
                ok, path = _episode(world, oracle, task, seed, config)
                summary[task]["written" if path else "failed"] += 1
                if progress:
                    progress(task, seed, ok)
    finally:
        world.close()
    return summary


def _episode(world: TabletopWorld, oracle: ScriptedOracle, task: str, seed: int, config: CollectConfig):
    world.reset(seed, task)
    oracle.reset(task)
    meta = EpisodeMeta(episode_id=new_episode_id(task, seed), task=task, instruction=TASKS[task].instruction,
                       seed=seed, success=False, source="oracle", cameras=list(config.cameras),
                       image_height=config.image_height, image_width=config.image_width,
                       joint_names=list(world.joint_names), control_rate_hz=config.control_rate_hz)
    writer = EpisodeWriter(config.out, meta)
    steps = int(TASKS[task].max_duration_s * config.control_rate_hz)
    settle = None
    for _ in range(steps):
        q = world.joint_positions()
        images = {c: world.render(c) for c in config.cameras}
        action = oracle.act(q, world.object_poses())[0]
        writer.add(images, q, action, world.time)
        world.step(action)
        if settle is None and world.success():
            settle = config.settle_steps
        elif settle is not None:
            settle -= 1
            if settle <= 0:
                break
    ok = settle is not None
    if not ok and not config.keep_failures:
        return False, None
    return ok, writer.finish(ok)
