"""A simulated robot without ROS: runs a policy in the MuJoCo tabletop and records RL episodes.

It records exactly what ``episode_node`` records on a robot (``docs/episode-format.md``): per control
step the frames at policy resolution, the measured joints, the command executed, whether a human
gave it, and which policy version, observation and chunk position produced it. The learner cannot
tell its episodes from a robot's. Used by the learner tests and ``robot-rl bench learning``, where a
whole ROS graph per simulated robot would cost more than the learning.

The policy is queried every ``execute_steps`` control steps and the chunk's points are executed in
between (1: receding horizon, how the shipped default policy was evaluated).

Human in the loop, as in the ROS graph: an optional ``human`` (the scripted simulated human,
:class:`robot_rl.teleop.scripted.ScriptedHuman`) is read every step with the policy's proposal; while
it is engaged its targets are executed and recorded as interventions, and the policy starts a fresh
chunk when it gets control back. With a ``failure_states`` bank, the world state at each take-over is
saved and an episode starts from a saved state with probability ``return_probability``
(return-and-explore). The hand-over blend of the safety node is not modelled: the simulated arm's
position servos smooth a jump of one step.

The end of an episode. On a robot the episode node ends an episode when the progress critic's done
fires (or at the time limit, or on an operator's event), so the critic sees the frames where the task
is done. Here the simulator's ground truth says when the task is done, and it must not reach the
learner: a recorded episode goes on for ``settle_steps`` control steps after the first successful
state, the arm holding its last command (recorded as holds: no policy decision, no human), so that the
learner's critic sees the finished task and its done can fire, as on the 5-step settle tail of the
demonstrations ``robot-rl collect`` records, which the critic was trained on. A hold's reward goes to
the decision before it (``learn/ppo.py`` section 4), so the done's bonus is credited to the chunk that
finished the task, and to no policy decision when the human finished it. ``meta.extra["success_step"]``
is the first row that shows success (ground truth, for reports only, as in collected episodes).
Without the tail the last recorded frame was the one *before* the successful step, and the critic's
done fired on a tenth to a sixth of the successful episodes (docs/learning-benchmark.md item 42).
"""

from __future__ import annotations

from robot_rl.data.episodes import Episode, EpisodeMeta, EpisodeWriter, new_episode_id
from robot_rl.data.recorder import NOT_POLICY
from robot_rl.policy.base import Observation, Policy
from robot_rl.sim.tabletop import TabletopWorld
from robot_rl.sim.tasks import TASKS, get_task
from robot_rl.sim.world import WorldConfig

# the per-step extras of a step no policy chunk produced (a human's, or a hold): no decision for PPO
NO_DECISION = {"policy_version": NOT_POLICY, "obs_step": NOT_POLICY, "chunk_step": NOT_POLICY}


class SimActor:
    def __init__(self, policy: Policy, cameras: list[str], image_width: int, image_height: int,
                 control_rate_hz: float = 10.0, execute_steps: int = 1, robot: str = "sim", human=None,
                 failure_states=None, return_probability: float = 0.5, settle_steps: int = 5):
        if settle_steps < 0:
            raise ValueError(f"settle_steps {settle_steps}: expected 0 (end at success) or more control steps")
        self.policy, self.cameras, self.execute_steps, self.robot = policy, list(cameras), max(1, execute_steps), robot
        self.settle_steps = settle_steps
        self.world = TabletopWorld(WorldConfig(control_rate_hz=control_rate_hz, cameras=list(cameras),
                                               image_width=image_width, image_height=image_height))
        self.human = human
        self.failure_states = failure_states  # {task: FailureStates} or None
        self.return_probability = return_probability

    def _start(self, task: str, seed: int) -> str | None:
        """Reset the world; with return-and-explore maybe into a saved failure state. Returns its name."""
        bank = (self.failure_states or {}).get(task)
        if bank is not None and bank.rng.random() < self.return_probability:
            picked = bank.sample()
            if picked is not None:
                self.world.restore(picked[1])
                return picked[0]
        self.world.reset(seed, task)
        return None

    def episode(self, task: str, seed: int, max_steps: int | None = None) -> Episode:
        """Run and record one episode (``meta.success``: simulator ground truth, for reports only)."""
        return self._run(task, seed, max_steps, record=True)

    def succeeds(self, task: str, seed: int, max_steps: int | None = None) -> bool:
        """Run one episode without recording it (evaluation): frames are rendered only when the policy
        is queried."""
        return self._run(task, seed, max_steps, record=False)

    def _run(self, task: str, seed: int, max_steps: int | None, record: bool):
        from robot_rl.teleop.base import TeleopContext

        task = get_task(task).name
        w = self.world
        restored = self._start(task, seed)
        instruction = TASKS[task].instruction
        self.policy.reset(instruction)
        # how the policy explored, for the learner's log-probabilities (learn/ppo.py section 9)
        extra = {"robot": self.robot, "exploration": getattr(self.policy, "exploration", None)}
        if restored:
            extra["restored_state"] = restored
        meta = EpisodeMeta(new_episode_id(task, seed), task, instruction, seed, False, "policy", list(self.cameras),
                           w.config.image_height, w.config.image_width, list(w.joint_names), w.config.control_rate_hz,
                           extra=extra)
        writer = EpisodeWriter("", meta)
        steps = max_steps or int(TASKS[task].max_duration_s * w.config.control_rate_hz)
        chunk, obs_step, version, k = None, -1, -1, 0
        success, engaged, interventions, executed = False, False, 0, None
        for t in range(steps):
            q = w.joint_positions()
            query = chunk is None or k >= min(self.execute_steps, chunk.horizon)
            images = {c: w.render(c) for c in self.cameras} if record or query else {}
            if query:
                obs = Observation(w.time, list(w.joint_names), q, instruction, images, w.object_poses())
                chunk = self.policy.act(obs)
                order = [chunk.joint_names.index(n) for n in w.joint_names]
                # the chunk says which weights made it (a swap may land between act() and here)
                version = chunk.version if chunk.version >= 0 else int(getattr(self.policy, "version_number", 0))
                obs_step, k = t, 0
            target = chunk.positions[k][order]
            human_target = None
            if self.human is not None:
                reading = self.human.read(TeleopContext(w.time, list(w.joint_names), q, executed, target, instruction,
                                                        w.object_poses(), w.task_progress(), new_episode=t == 0))
                if reading.engaged and reading.positions is not None:
                    human_target = reading.positions
                    if not engaged:
                        interventions += 1
                        bank = (self.failure_states or {}).get(task)
                        if bank is not None:
                            bank.add(w.snapshot())  # where the policy needed help: worth returning to
            engaged = human_target is not None
            if engaged:
                executed = human_target
                if record:
                    writer.add(images, q, executed, w.time, intervention=True,
                               extras={**NO_DECISION, "progress": w.task_progress()})
                chunk = None  # the policy starts afresh when it gets control back
            else:
                executed = target
                if record:
                    writer.add(images, q, target, w.time, extras={"policy_version": version, "obs_step": obs_step,
                                                                  "chunk_step": k, "progress": w.task_progress()})
                k += 1
            w.step(executed)
            if w.success():
                success = True  # ground truth: only reported (meta.success), the learner uses the critic
                break
        if not record:
            return success
        if success:
            meta.extra["success_step"] = t + 1  # the next row is the first that shows it
            for _ in range(self.settle_steps):  # the settle tail: the arm holds while the critic looks
                writer.add({c: w.render(c) for c in self.cameras}, w.joint_positions(), executed, w.time,
                           extras={**NO_DECISION, "progress": w.task_progress()})
                w.step(executed)
        meta.extra["interventions"] = interventions
        return writer.episode(success)

    def close(self) -> None:
        self.world.close()
