"""``robot-rl collect``: episodes from scripted behaviours in the MuJoCo tabletop world.

Each episode: reset the world with a seed and task, then at every control step render the cameras,
read the joints, ask the behaviour for its next target and step the world with it, recording what was
seen and commanded, the simulator's ground-truth task progress (optional array ``progress``) and the
objects' positions (optional array ``object_positions``, for train-bc's auxiliary loss).
After success the episode goes on for ``settle_steps`` more steps so that the episodes also show the
arm staying at the goal; ``meta.extra["success_step"]`` is the row where success was first seen.

Behaviours: ``oracle`` (demonstrations), ``noisy`` (the oracle with noise, detours and giving up) and
``random`` (a random walk): the last two give a progress critic regression, stagnation and failures
to learn from (see ``robot_rl/sim/behaviours.py``). ``dart`` is for behaviour cloning: the arm is sent
the oracle's target plus a bias held for a while, and each row's ``action`` is the oracle's label from the
state it reached, so the demonstrations show recoveries (DART); what was sent is the extra array
``executed_action``. Failed episodes are dropped unless asked for.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from robot_rl.data.dataset import CAMERA_OBJECTS_PREFIX, OBJECTS_ARRAY
from robot_rl.data.episodes import EXECUTED_ARRAY, EpisodeMeta, EpisodeWriter, new_episode_id
from robot_rl.sim.behaviours import DartOracle, NoisyOracle, RandomWalk
from robot_rl.sim.oracle import ArmKinematics, ScriptedOracle
from robot_rl.sim.tabletop import TabletopWorld
from robot_rl.sim.tasks import TASKS, get_task
from robot_rl.sim.world import OBJECT_ORDER, WorldConfig


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
    behaviour: str = "oracle"  # "oracle", "noisy", "random" or "dart"

    def __post_init__(self) -> None:
        if self.behaviour not in BEHAVIOURS:
            raise ValueError(f"behaviour '{self.behaviour}' is not one of {list(BEHAVIOURS)}")


BEHAVIOURS = ("oracle", "noisy", "random", "dart")
# Behaviours whose recorded actions are the oracle's own (the demonstrations behaviour cloning learns from).
ORACLE_LABELLED = ("oracle", "dart")
# Typical oracle episode length in control steps at 10 Hz (decides when a noisy oracle gives up).
_EXPECTED_STEPS = {"reach_cube": 12, "press_button": 14, "push_cube_to_pad": 32, "pick_cube": 18}


def collect(config: CollectConfig, progress=None) -> dict:
    """Write episodes; returns {task: {"written": n, "failed": n}} (failures are written only when kept)."""
    tasks = [get_task(t).name for t in config.tasks]  # UnknownTaskError names the valid tasks
    Path(config.out).mkdir(parents=True, exist_ok=True)
    world = TabletopWorld(WorldConfig(control_rate_hz=config.control_rate_hz, cameras=list(config.cameras),
                                      image_width=config.image_width, image_height=config.image_height))
    oracle = ScriptedOracle(ArmKinematics.from_model(world.model), world.control_period)
    actor = {"oracle": oracle, "noisy": NoisyOracle(oracle), "random": RandomWalk(),
             "dart": DartOracle(oracle)}[config.behaviour]
    summary = {t: {"written": 0, "failed": 0} for t in tasks}
    try:
        for task in tasks:
            for i in range(config.episodes):
                seed = config.seed + i
                ok, path = _episode(world, actor, task, seed, config)
                summary[task]["written"] += path is not None
                summary[task]["failed"] += not ok
                if progress:
                    progress(task, seed, ok)
    finally:
        world.close()
    return summary


def object_positions(world: TabletopWorld) -> np.ndarray:
    """(3 x objects,) the positions of ``OBJECT_ORDER``'s objects, ground truth (simulation only)."""
    poses = world.object_poses()
    return np.concatenate([poses[name].position for name in OBJECT_ORDER]).astype(np.float32)


def object_positions_in_camera(world: TabletopWorld, camera: str) -> np.ndarray:
    """(3 x objects,) the same positions in ``camera``'s own frame (x right, y up, z toward the viewer): for a
    camera on the wrist, where the objects are relative to the gripper, which is what it sees."""
    position, rotation = world.camera_pose(camera)
    poses = world.object_poses()
    return np.concatenate([rotation.T @ (poses[name].position - position) for name in OBJECT_ORDER]).astype(np.float32)


def _episode(world: TabletopWorld, actor, task: str, seed: int, config: CollectConfig):
    world.reset(seed, task)
    if isinstance(actor, ScriptedOracle):
        actor.reset(task)
    else:
        actor.reset(task, seed, round(_EXPECTED_STEPS.get(task, 20) * config.control_rate_hz / 10.0))
    meta = EpisodeMeta(episode_id=new_episode_id(task, seed), task=task, instruction=TASKS[task].instruction,
                       seed=seed, success=False, source="oracle" if config.behaviour in ORACLE_LABELLED else "scripted",
                       cameras=list(config.cameras), image_height=config.image_height, image_width=config.image_width,
                       joint_names=list(world.joint_names), control_rate_hz=config.control_rate_hz,
                       extra={"behaviour": config.behaviour})
    writer = EpisodeWriter(config.out, meta)
    steps = int(TASKS[task].max_duration_s * config.control_rate_hz)
    settle = None
    for _ in range(steps):
        q = world.joint_positions()
        images = {c: world.render(c) for c in config.cameras}
        extras = {"progress": world.task_progress(), OBJECTS_ARRAY: object_positions(world)}
        extras.update({f"{CAMERA_OBJECTS_PREFIX}{c}": object_positions_in_camera(world, c) for c in config.cameras})
        if isinstance(actor, DartOracle):
            action, command = actor.label_and_command(q, world.object_poses())
            extras[EXECUTED_ARRAY] = command.astype(np.float32)
        else:
            action = command = actor.act(q, world.object_poses())[0]
        writer.add(images, q, action, world.time, extras=extras)
        world.step(command)
        if settle is None and world.success():
            settle = config.settle_steps
            meta.extra["success_step"] = len(writer.rows["stamp"])  # the next row is the first done one
        elif settle is not None:
            settle -= 1
            if settle <= 0:
                break
    ok = settle is not None
    if not ok and not config.keep_failures:
        return False, None
    return ok, writer.finish(ok)
