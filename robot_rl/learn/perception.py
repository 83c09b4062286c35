"""``robot-rl bench perception``: is a task's limit what the policy sees, or imitation itself?

Two measurements, both in the simulated tabletop with the scripted oracle (docs/learning-benchmark.md,
item 24, asked them of push):

1. **A policy that sees the true state.** The same behaviour-cloning recipe as ``train-bc`` (oracle
   demonstrations of seeds 0..N-1 cut at success, chunks of ``horizon`` joint deltas, the mean fitted
   by squared error) but the observation is the simulator state: joints and the objects' positions. It
   is evaluated like the benchmark (held-out layouts 10000.., queried every ``execute_steps`` steps),
   then with the objects' positions frozen at the first step (no feedback on where the cube went),
   then with Gaussian noise on the cube's horizontal position at every query, the error a camera
   would add. The oracle gets the same noise. If this policy succeeds where the image policy fails,
   chunking, open-loop execution and the data are not the limit; the noise levels say how precisely
   the policy must know where the object is.
2. **What the image policy knows.** A ridge regression (a linear probe) from an exported policy's
   image features (what its trunk reads) to the cube's horizontal position, fitted on the oracle's
   frames of some layouts and tested on others, per camera and for both. Its error is an upper
   bound on how well the features alone place the cube.

3. **How far the human's labels go when perception is perfect** (``--state-dagger``). The state policy
   of part 1, trained on the benchmark's 20 demonstrations per task, then the HIL arm's human protocol
   on the true state: 50 training episodes per task (the benchmark's 200 across four tasks), the same
   simulated human (:class:`~robot_rl.teleop.scripted.ScriptedHuman`, drift trigger, 1.5 s take-overs),
   the human's steps added to the data as the learner's demo buffer adds them (a chunk stops where the
   take-over stopped), a fine-tuning round after every 5 episodes, and a refit from scratch on
   everything at the end (DAgger's aggregate retraining). A reference for how far the human's labels go
   when perception is perfect, not a strict bound: the benchmark's HIL arm also returns to saved failure
   states and trains one multi-task network, which this simpler protocol does not.

4. **The state policy on the image policy's own estimates** (``--estimates-from CKPT``). A ``train-bc``
   checkpoint trained with the auxiliary object loss (``--objects-coef``) carries a linear head from its
   image features to the objects' positions. Part 1's state policy is evaluated again with that head's
   estimates, from the frames the cameras render at every query, in place of the simulator's positions:
   the cube's alone, then every object's. Its success says whether the features' precision *in closed
   loop* (the head's error is logged at every query, on the states the policy itself visits) is enough
   for the task; a policy that reads its inputs the way the state policy does can do no better with them.

``state_frame: arm`` (``--state-frame arm``) gives parts 1 and 3 the objects in the arm's own frame (about
the shoulder's vertical axis, rotated by the pan joint) and the joints without the pan: rotating the whole
scene about the base then changes nothing the policy sees or does (the labels are joint deltas), so one
demonstration stands for every direction it could have been recorded in. It measures how much of a task's
need for labels is the spread of directions in its layouts (item 33). ``state_action: cartesian``
(``--state-action cartesian``) makes the action egocentric too: each chunk point is the grip point's move
in the arm's frame (forward, left, up), the change of the fingers' heading and the gripper, which the
arm's inverse kinematics turns into joint targets; the labels are the oracle's (or the human's) joint
targets read through the forward kinematics. Joint deltas are the image policy's contract; this is the
reference for what an egocentric action would be worth.

No ROS, no rendering for parts 1 and 3 (the state policy needs no frames); ``--quick`` is a smoke run.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from robot_rl.policy.arm_frame import ArmGeometry, to_points, to_targets
from robot_rl.sim.oracle import ArmKinematics, ScriptedOracle, _wrap
from robot_rl.sim.tabletop import JOINT_NAMES, TabletopWorld
from robot_rl.sim.tasks import TASKS, get_task
from robot_rl.sim.world import OBJECT_ORDER, ObjectPose, WorldConfig

HELD_OUT_SEED = 10000  # the benchmark's evaluation layouts


@dataclass
class PerceptionConfig:
    task: str = "push_cube_to_pad"
    demos: int = 200  # oracle demonstrations (seeds 0..demos-1), as the shipped policy had per task
    horizon: int = 8  # chunk length, as the shipped policy's
    execute_steps: int = 4  # as the benchmark
    train_steps: int = 6000  # Adam steps of the state policy (batch 256)
    layouts: int = 50  # held-out layouts per evaluation
    noise_m: list[float] = field(default_factory=lambda: [0.0025, 0.005, 0.01])  # cube xy noise (std, metres)
    train_noise_m: float = 0.0  # the same noise on the state policy's training observations (augmentation)
    state_frame: str = "world"  # "world": joints and positions as the simulator gives them; "arm": see above
    state_action: str = "joint"  # "joint": chunks of joint deltas (the policy's contract); "cartesian": see above
    probe_fit_layouts: int = 100  # part 2: layouts 20000.. to fit the probe, 30000.. to test it
    probe_test_layouts: int = 50
    # part 3 (state DAgger): per task, as the learning benchmark's HIL arm sees them
    dagger_tasks: list[str] = field(default_factory=lambda: list(TASKS))
    dagger_demos: int = 20  # the benchmark's --demos-per-task of its modest start
    dagger_episodes: int = 50  # training episodes per task (the benchmark's 200 over four tasks)
    dagger_update_every: int = 5  # episodes per fine-tuning round, as the learner's episodes_per_update
    dagger_update_steps: int = 500  # Adam steps per round, on all the data so far
    dagger_eval_every: int = 25
    seed: int = 0


def _with_cube_noise(objects: dict[str, ObjectPose], rng: np.random.Generator, std: float) -> dict[str, ObjectPose]:
    if std <= 0:
        return objects
    cube = objects["cube"]
    return {**objects, "cube": ObjectPose(cube.position + np.r_[rng.normal(0.0, std, 2), 0.0], cube.quaternion)}


STATE_FRAMES = ("world", "arm")
STATE_ACTIONS = ("joint", "cartesian")
# The fingers' heading matters modulo this per task, as the oracle grips (a cube is square, the closed
# fingers that push or press are symmetric front to back).
YAW_SYMMETRY = {"reach_cube": math.pi / 2, "press_button": math.pi, "push_cube_to_pad": math.pi, "pick_cube": math.pi / 2}


def _turn(x: float, y: float, angle: float) -> tuple[float, float]:
    """(x, y) turned by ``angle`` about the vertical: by minus the pan from the world into the arm's frame
    (x along the arm's heading, y to its left), by the pan back."""
    cos, sin = math.cos(angle), math.sin(angle)
    return cos * x - sin * y, sin * x + cos * y


def _state(q: np.ndarray, objects: dict[str, ObjectPose], frame: str = "world",
           base_xy: np.ndarray | None = None) -> np.ndarray:
    """The state policy's input: joints and the objects' positions, in the world's frame or the arm's."""
    if frame == "world":
        return np.concatenate([q] + [objects[name].position for name in OBJECT_ORDER]).astype(np.float32)
    parts = [q[1:]]  # the arm's frame: positions about the shoulder turned with the pan, heights unchanged
    for name in OBJECT_ORDER:
        parts.append([*_turn(*(objects[name].position[:2] - base_xy), -q[0]), objects[name].position[2]])
    return np.concatenate(parts).astype(np.float32)


class StatePolicy:
    """Behaviour cloning on the true state: an MLP from (joints, object positions) to a chunk of joint deltas,
    or with ``state_frame``/``state_action`` the same seen from the arm and acting in its Cartesian frame."""

    def __init__(self, config: PerceptionConfig, world: TabletopWorld, oracle: ScriptedOracle):
        if config.state_frame not in STATE_FRAMES:
            raise ValueError(f"state_frame: expected one of {', '.join(STATE_FRAMES)}, got {config.state_frame!r}")
        if config.state_action not in STATE_ACTIONS:
            raise ValueError(f"state_action: expected one of {', '.join(STATE_ACTIONS)}, got {config.state_action!r}")
        self.point_size = 5 if config.state_action == "cartesian" else 6  # numbers per chunk point
        self.config, self.world, self.oracle = config, world, oracle
        self.geometry = ArmGeometry.from_kinematics(oracle.kin)  # the cartesian action's kinematics (policy/arm_frame.py)
        self.steps = int(TASKS[config.task].max_duration_s * world.config.control_rate_hz)

    def observe(self, q: np.ndarray, objects: dict[str, ObjectPose]) -> np.ndarray:
        return _state(q, objects, self.config.state_frame, self.oracle.kin.shoulder[:2])

    def label(self, q: np.ndarray, targets: np.ndarray) -> np.ndarray:
        """The training target (flat) for joint targets ``targets`` (H, 6) commanded from joints ``q``."""
        if self.config.state_action == "joint":
            return (targets - q[None, :]).reshape(-1)
        points = to_points(self.geometry, torch.from_numpy(q)[None], torch.from_numpy(targets)[None])[0].numpy()
        points[:, 3] = _wrap(points[:, 3], YAW_SYMMETRY[self.config.task])  # the heading change as the oracle grips
        return points.reshape(-1)

    def targets(self, q: np.ndarray, output: np.ndarray) -> np.ndarray:
        """Joint targets (H, 6) from the network's (de-normalised) output, the inverse of :meth:`label`."""
        points = output.reshape(self.config.horizon, self.point_size)
        if self.config.state_action == "joint":
            return q[None, :] + points
        out = to_targets(self.geometry, torch.from_numpy(q)[None], torch.from_numpy(points.astype(np.float64))[None])[0].numpy()
        out[:, 4] = q[4] + _wrap(out[:, 4] - q[4], YAW_SYMMETRY[self.config.task])  # the roll nearest the measured one
        return out

    def demonstrations(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(states, chunk targets) of the oracle's successful demonstrations, cut at success like train-bc."""
        c, rng = self.config, np.random.default_rng(self.config.seed)
        states, targets = [], []
        for seed in range(c.demos):
            self.world.reset(seed, c.task)
            self.oracle.reset(c.task)
            qs, seen, actions = [], [], []
            for _ in range(self.steps):
                q, objects = self.world.joint_positions(), self.world.object_poses()
                action = self.oracle.act(q, objects)[0]
                qs.append(q.copy())
                seen.append(self.observe(q, _with_cube_noise(objects, rng, c.train_noise_m)))
                actions.append(action)
                self.world.step(action)
                if self.world.success():
                    break
            else:
                continue  # the oracle failed this layout: not a demonstration
            last, actions = len(actions) - 1, np.asarray(actions)
            for t in range(last + 1):
                rows = np.minimum(np.arange(t, t + c.horizon), last)
                states.append(seen[t])
                targets.append(self.label(qs[t], actions[rows]))
        return torch.tensor(np.asarray(states)), torch.tensor(np.asarray(targets, np.float32))

    def train(self) -> dict:
        torch.manual_seed(self.config.seed)
        x, y = self.demonstrations()
        return self.fit(x, y, torch.ones_like(y), self.config.train_steps, fresh=True)

    def fit(self, x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor, steps: int, fresh: bool) -> dict:
        """Squared error on the chunk entries ``mask`` keeps. ``fresh``: a new network at lr 1e-3, normalised
        by these data; otherwise the current one goes on at lr 3e-4 (a fine-tuning round)."""
        if fresh:
            self.x_mean, self.x_std = x.mean(0), x.std(0) + 1e-3
            self.y_mean, self.y_std = y.mean(0), y.std(0) + 1e-3
            self.net = torch.nn.Sequential(torch.nn.Linear(x.shape[1], 256), torch.nn.ReLU(), torch.nn.Linear(256, 256),
                                           torch.nn.ReLU(), torch.nn.Linear(256, 256), torch.nn.ReLU(),
                                           torch.nn.Linear(256, y.shape[1]))
        optimiser = torch.optim.AdamW(self.net.parameters(), 1e-3 if fresh else 3e-4, weight_decay=1e-4)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, steps)
        xn, yn = (x - self.x_mean) / self.x_std, (y - self.y_mean) / self.y_std
        for _ in range(steps):
            rows = torch.randint(0, len(x), (256,))
            loss = (((self.net(xn[rows]) - yn[rows]) ** 2) * mask[rows]).sum() / mask[rows].sum().clamp_min(1.0)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
        return {"samples": len(x), "final_loss": round(loss.item(), 5)}

    def chunk(self, q: np.ndarray, objects: dict[str, ObjectPose]) -> np.ndarray:
        with torch.no_grad():
            out = self.net((torch.from_numpy(self.observe(q, objects)) - self.x_mean) / self.x_std) * self.y_std + self.y_mean
        return self.targets(q, out.numpy())

    def success_rate(self, execute_steps: int, noise_m: float = 0.0, frozen: bool = False,
                     estimates: "ObjectEstimates | None" = None, estimated: tuple[str, ...] = ()) -> float:
        """Success on the held-out layouts; ``estimates`` replaces the ``estimated`` objects' true positions
        by what the image policy's head makes of the rendered frames (part 4)."""
        c, wins = self.config, 0
        rng = np.random.default_rng(c.seed)
        for seed in range(HELD_OUT_SEED, HELD_OUT_SEED + c.layouts):
            self.world.reset(seed, c.task)
            first = self.world.object_poses()
            chunk, k = None, 0
            for _ in range(self.steps):
                q = self.world.joint_positions()
                if chunk is None or k >= execute_steps:
                    seen = first if frozen else self.world.object_poses()
                    if estimates is not None:
                        seen = estimates.replace(self.world, seen, estimated)
                    chunk, k = self.chunk(q, _with_cube_noise(seen, rng, noise_m)), 0
                self.world.step(chunk[k])
                k += 1
                if self.world.success():
                    wins += 1
                    break
        return wins / c.layouts


class ObjectEstimates:
    """Part 4: where a checkpoint's object head places the objects, from the camera encoders' features of
    the frames the world renders now; keeps every query's error. The checkpoint is a ``train-bc`` one
    trained with ``--objects-coef`` (the policy's own encoders and auxiliary head) or a
    ``pretrain-encoder`` one (the encoders and head before any action was learned), so the same
    closed-loop measurement says what behaviour cloning kept of a pretraining."""

    def __init__(self, checkpoint: str):
        from robot_rl.learn.bc import (VLA_CHECKPOINT_KEYS, ObjectPositionHead, model_from_checkpoint, read_checkpoint,
                                       require_keys)
        from robot_rl.policy.vla import VLAConfig, VLAModel

        payload = read_checkpoint(checkpoint, (), "train-bc or pretrain-encoder")
        if "encoder_config" in payload and "encoders" in payload:  # pretrain-encoder
            # only the encoders are used; the joints size the action layers, which stay untrained
            fields = {**payload["encoder_config"], "joint_names": list(JOINT_NAMES)}
            self.model = VLAModel(VLAConfig.from_dict(fields)).eval()
            self.model.encoders.load_state_dict(payload["encoders"])
        else:  # read once; checked as load_checkpoint checks a train-bc checkpoint
            require_keys(payload, checkpoint, VLA_CHECKPOINT_KEYS, "VLA")
            self.model = model_from_checkpoint(payload)
        if "object_head" not in payload:
            raise ValueError(f"{checkpoint}: no auxiliary object head to estimate positions with; "
                             "expected a train-bc checkpoint trained with --objects-coef or a pretrain-encoder one")
        weights = payload["object_head"]
        self.head = ObjectPositionHead(weights["linear.weight"].shape[1], weights["mean"].numpy(), weights["std"].numpy())
        self.head.load_state_dict(weights)
        self.errors_mm: dict[str, list[float]] = {name: [] for name in OBJECT_ORDER}

    def world_config(self) -> WorldConfig:
        c = self.model.config
        return WorldConfig(control_rate_hz=c.control_rate_hz, cameras=list(c.cameras),
                           image_width=c.image_width, image_height=c.image_height)

    def replace(self, world: TabletopWorld, objects: dict[str, ObjectPose], names: tuple[str, ...]) -> dict[str, ObjectPose]:
        with torch.no_grad():
            seen = self.model.image_features({c: torch.from_numpy(world.render(c))[None] for c in self.model.config.cameras})
            positions = self.head.positions(seen).view(-1, 3).numpy().astype(np.float64)
        out = dict(objects)
        # the world's positions come first, in the order collect records them (then, with train-bc
        # --objects-in-cameras, each camera's view of them, which this part does not use)
        for name, position in zip(OBJECT_ORDER, positions):
            self.errors_mm[name].append(float(np.linalg.norm(position[:2] - objects[name].position[:2])) * 1e3)
            if name in names:
                out[name] = ObjectPose(position, objects[name].quaternion)
        return out

    def measured(self, policy: StatePolicy, execute_steps: int, names: tuple[str, ...]) -> dict:
        """Success with ``names`` estimated, and the head's horizontal error on the cube at those queries."""
        self.errors_mm = {name: [] for name in OBJECT_ORDER}
        success = policy.success_rate(execute_steps, estimates=self, estimated=names)
        cube = np.asarray(self.errors_mm["cube"])
        return {"success": success, "queries": len(cube), "cube_error_mm": {
            "median": round(float(np.median(cube)), 1), "p90": round(float(np.percentile(cube, 90)), 1)}}


def state_dagger(config: PerceptionConfig, world: TabletopWorld, oracle: ScriptedOracle, task: str, echo=print) -> dict:
    """Part 3 for one task: success on the held-out layouts along the human-in-the-loop episodes."""
    from robot_rl.teleop.base import TeleopContext
    from robot_rl.teleop.scripted import ScriptedHuman, ScriptedHumanConfig

    c = PerceptionConfig(**{**asdict(config), "task": task, "demos": config.dagger_demos})
    torch.manual_seed(c.seed)
    policy = StatePolicy(c, world, oracle)
    x, y = policy.demonstrations()
    data = {"x": [x], "y": [y], "mask": [torch.ones_like(y)]}
    policy.fit(x, y, data["mask"][0], c.train_steps, fresh=True)
    human = ScriptedHuman(ScriptedHumanConfig(seed=c.seed, control_rate_hz=world.config.control_rate_hz),
                          list(world.joint_names))
    curve, human_steps, successes = {0: policy.success_rate(c.execute_steps)}, 0, 0
    for episode in range(c.dagger_episodes):
        world.reset(100000 + episode, task)  # the benchmark's training layouts of seed 0
        chunk, k, taken = None, 0, []  # taken: (state, q, oracle target, take-over number) per human step
        take_over, engaged_before = 0, False
        for step in range(policy.steps):
            q, objects = world.joint_positions(), world.object_poses()
            if chunk is None or k >= c.execute_steps:
                chunk, k = policy.chunk(q, objects), 0
            reading = human.read(TeleopContext(now=world.time, joint_names=list(world.joint_names), measured=q,
                                               policy_target=chunk[k], instruction=TASKS[task].instruction,
                                               objects=objects, new_episode=step == 0))
            if reading.engaged:
                take_over += not engaged_before
                taken.append((policy.observe(q, objects), q.copy(), np.asarray(reading.positions), take_over))
                action, chunk = reading.positions, None  # after a take-over the policy plans afresh
            else:
                action, k = chunk[k], k + 1
            engaged_before = reading.engaged
            world.step(action)
            if world.success():
                successes += 1
                break
        # each human step labels a chunk of the human's next commands, as far as that take-over went
        for t, (state, q, _, number) in enumerate(taken):
            rows = np.arange(t, t + c.horizon)
            valid = np.array([r < len(taken) and taken[r][3] == number for r in rows])
            label = policy.label(q, np.stack([taken[min(r, len(taken) - 1)][2] for r in rows]))
            data["x"].append(torch.tensor(state[None]))
            data["y"].append(torch.tensor(label[None], dtype=torch.float32))
            data["mask"].append(torch.tensor(np.repeat(valid, policy.point_size)[None], dtype=torch.float32))
        human_steps += len(taken)
        if (episode + 1) % c.dagger_update_every == 0:
            policy.fit(*(torch.cat(v) for v in data.values()), c.dagger_update_steps, fresh=False)
        if (episode + 1) % c.dagger_eval_every == 0 or episode + 1 == c.dagger_episodes:
            curve[episode + 1] = policy.success_rate(c.execute_steps)
    everything = [torch.cat(v) for v in data.values()]
    policy.fit(*everything, c.train_steps, fresh=True)
    result = {"success": curve, "refit_on_everything": policy.success_rate(c.execute_steps),
              "demonstration_samples": len(x), "human_steps": human_steps, "training_successes": successes}
    echo(f"state DAgger, {task}: {json.dumps(result)}")
    return result


def oracle_success_rate(config: PerceptionConfig, world: TabletopWorld, oracle: ScriptedOracle, noise_m: float) -> float:
    rng, wins = np.random.default_rng(config.seed), 0
    steps = int(TASKS[config.task].max_duration_s * world.config.control_rate_hz)
    for seed in range(HELD_OUT_SEED, HELD_OUT_SEED + config.layouts):
        world.reset(seed, config.task)
        oracle.reset(config.task)
        for _ in range(steps):
            world.step(oracle.act(world.joint_positions(), _with_cube_noise(world.object_poses(), rng, noise_m))[0])
            if world.success():
                wins += 1
                break
    return wins / config.layouts


def probe_image_features(policy_dir: str, config: PerceptionConfig) -> dict:
    """Part 2: ridge regression from the policy's image features to the cube's (x, y), in millimetres."""
    from robot_rl.inference.weights import model_from_weights

    source = Path(policy_dir)
    meta = json.loads((source / "metadata.json").read_text())
    model = model_from_weights(meta["model_config"], (source / "weights.safetensors").read_bytes())
    cams = list(model.config.cameras)
    world = TabletopWorld(WorldConfig(control_rate_hz=model.config.control_rate_hz, cameras=cams,
                                      image_width=model.config.image_width, image_height=model.config.image_height))
    oracle = ScriptedOracle(ArmKinematics.from_model(world.model), world.control_period)
    steps = int(TASKS[config.task].max_duration_s * world.config.control_rate_hz)

    def frames(first_seed: int, count: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Each camera's features (N, F) along the oracle's episodes, and the cube's (x, y) (N, 2)."""
        features, cube = {c: [] for c in cams}, []
        for seed in range(first_seed, first_seed + count):
            world.reset(seed, config.task)
            oracle.reset(config.task)
            for _ in range(steps):
                q, objects = world.joint_positions(), world.object_poses()
                with torch.no_grad():  # (1, F x cameras) in config.cameras order: split per camera
                    seen = model.image_features({c: torch.from_numpy(world.render(c))[None] for c in cams}).numpy()
                for c, part in zip(cams, np.split(seen, len(cams), axis=1)):
                    features[c].append(part)
                cube.append(objects["cube"].position[:2].copy())
                world.step(oracle.act(q, objects)[0])
                if world.success():
                    break
        return {c: np.concatenate(v) for c, v in features.items()}, np.asarray(cube)

    try:
        fit, fit_cube = frames(20000, config.probe_fit_layouts)
        test, test_cube = frames(30000, config.probe_test_layouts)
    finally:
        world.close()
    result = {"policy": str(source), "fit_frames": len(fit_cube), "test_frames": len(test_cube)}
    for name, chosen in [(c, [c]) for c in cams] + [("all cameras", cams)]:
        a = np.concatenate([fit[c] for c in chosen] + [np.ones((len(fit_cube), 1))], axis=1)
        b = np.concatenate([test[c] for c in chosen] + [np.ones((len(test_cube), 1))], axis=1)
        weights = np.linalg.solve(a.T @ a + 1e-3 * np.eye(a.shape[1]), a.T @ fit_cube)
        error_mm = np.linalg.norm(b @ weights - test_cube, axis=1) * 1e3
        result[name] = {"median_mm": round(float(np.median(error_mm)), 1), "p90_mm": round(float(np.percentile(error_mm, 90)), 1)}
    return result


def run_perception_bench(config: PerceptionConfig, policy_dirs: list[str], json_path: str, echo=print,
                         dagger: bool = False, estimates_from: str | None = None) -> dict:
    for task in [config.task] + (config.dagger_tasks if dagger else []):
        get_task(task)  # an unknown task names the known ones
    torch.set_num_threads(1)
    started = time.time()
    report: dict = {"benchmark": "perception", "config": asdict(config)}
    estimates = ObjectEstimates(estimates_from) if estimates_from else None  # a bad checkpoint fails before any work
    # part 4 renders the image policy's cameras; parts 1 and 3 never render, whatever the world has
    world = TabletopWorld(estimates.world_config() if estimates else WorldConfig(control_rate_hz=10.0, cameras=[]))
    oracle = ScriptedOracle(ArmKinematics.from_model(world.model), world.control_period)
    try:
        policy = StatePolicy(config, world, oracle)
        report["state_policy"] = {"training": policy.train()}
        rows = report["state_policy"]
        rows[f"execute_{config.execute_steps}"] = policy.success_rate(config.execute_steps)
        rows["execute_1"] = policy.success_rate(1)
        rows[f"execute_{config.execute_steps}_objects_frozen_at_start"] = policy.success_rate(config.execute_steps, frozen=True)
        for std in config.noise_m:
            rows[f"execute_{config.execute_steps}_cube_noise_{std * 1e3:g}mm"] = policy.success_rate(config.execute_steps, std)
            report.setdefault("oracle", {})[f"cube_noise_{std * 1e3:g}mm"] = oracle_success_rate(config, world, oracle, std)
        echo(f"state policy: {json.dumps(rows)}; oracle: {json.dumps(report.get('oracle', {}))}")
        if estimates is not None:
            part = report["estimated_objects"] = {"checkpoint": estimates_from}
            for label, names in (("cube", ("cube",)), ("all objects", tuple(OBJECT_ORDER))):
                part[label] = estimates.measured(policy, config.execute_steps, names)
            echo(f"state policy on {estimates_from}'s estimates: {json.dumps(part)}")
        if dagger:
            report["state_dagger"] = {task: state_dagger(config, world, oracle, task, echo) for task in config.dagger_tasks}
            runs = list(report["state_dagger"].values())
            report["state_dagger_mean"] = {
                "start": float(np.mean([r["success"][0] for r in runs])),
                "end": float(np.mean([r["success"][max(r["success"])] for r in runs])),
                "refit_on_everything": float(np.mean([r["refit_on_everything"] for r in runs]))}
            echo(f"state DAgger, mean over tasks: {json.dumps(report['state_dagger_mean'])}")
    finally:
        world.close()
    for policy_dir in policy_dirs:
        probe = probe_image_features(policy_dir, config)
        report.setdefault("image_features_probe", []).append(probe)
        echo(f"probe of {policy_dir}'s image features for the cube: {json.dumps(probe)}")
    report["wall_s"] = round(time.time() - started, 1)
    Path(json_path).parent.mkdir(parents=True, exist_ok=True)
    Path(json_path).write_text(json.dumps(report, indent=2))
    echo(f"-> {json_path} ({report['wall_s']:.0f} s)")
    return report
