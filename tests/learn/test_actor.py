"""SimActor with the simulated human and return-and-explore (what the benchmark's HIL arm runs)."""

import numpy as np
import pytest

from robot_rl.learn.actor import SimActor
from robot_rl.learn.ppo import episode_decisions
from robot_rl.policy.base import PolicyConfig, make_policy
from robot_rl.sim.failure_states import FailureStates
from robot_rl.teleop.scripted import ScriptedHuman, ScriptedHumanConfig


def test_human_steps_are_interventions_and_take_over_states_are_banked_for_return(tmp_path, tiny_export):
    policy = make_policy(PolicyConfig(type="vla", options={"path": str(tiny_export), "backend": "torch"}))
    m = policy.metadata
    # a hair-trigger human: any disagreement with the oracle for one read makes it take over for 0.5 s
    human = ScriptedHuman(ScriptedHumanConfig(threshold=0.0, patience=1, takeover_s=0.5, cooldown_s=0.3),
                          list(m["joint_names"]))
    banks = {"reach_cube": FailureStates(tmp_path / "states", seed=0)}
    actor = SimActor(policy, list(m["cameras"]), m["image_width"], m["image_height"], execute_steps=2, human=human,
                     failure_states=banks, return_probability=1.0)
    try:
        e = actor.episode("reach_cube", 3, max_steps=30)
        human_steps = np.nonzero(e.intervention)[0]
        assert e.meta.extra["interventions"] >= 1 and len(human_steps) >= 5
        # the human's steps carry no policy decision; the policy's steps do (a settle tail after a
        # success holds: no decision either)
        end = e.meta.extra.get("success_step", len(e))
        assert np.all(e.extras["policy_version"][human_steps] == -1)
        assert np.all(e.extras["policy_version"][:end][~e.intervention[:end]] >= 0)
        decisions = episode_decisions(e, np.zeros(len(e), np.float32), m["chunk_length"], 0.99)
        assert sum(d["mask"].sum() for d in decisions) == end - np.count_nonzero(e.intervention[:end])
        assert len(banks["reach_cube"]) == e.meta.extra["interventions"]
        # return-and-explore: the next episode starts from a banked state, not the layout of its seed
        again = actor.episode("reach_cube", 4, max_steps=3)
        assert again.meta.extra["restored_state"].startswith("state_")
    finally:
        actor.close()


def test_evaluation_runs_are_deterministic_and_match_recorded_runs(tiny_export):
    policy = make_policy(PolicyConfig(type="vla", options={"path": str(tiny_export), "backend": "torch"}))
    m = policy.metadata
    actor = SimActor(policy, list(m["cameras"]), m["image_width"], m["image_height"], execute_steps=2)
    try:
        outcomes = [actor.succeeds("reach_cube", s) for s in (10000, 10001)]
        assert [actor.succeeds("reach_cube", s) for s in (10000, 10001)] == outcomes
        assert [actor.episode("reach_cube", s).meta.success for s in (10000, 10001)] == outcomes
    finally:
        actor.close()



def test_a_recorded_episode_shows_the_critic_its_success_for_the_settle_tail():
    """On a robot the episode ends when the critic's done fires, so the critic sees the finished task;
    here ground truth must not end a recorded episode before its frames show the success."""
    policy = make_policy(PolicyConfig(type="oracle", chunk_length=4))
    actor = SimActor(policy, ["front"], 32, 24, execute_steps=2, settle_steps=5)
    try:
        e = actor.episode("reach_cube", 7)
        assert e.meta.success
        success_step = e.meta.extra["success_step"]
        assert len(e) == success_step + 5  # five rows after the first one that shows success
        # the arm holds its last command in the tail: holds, no policy decision, no human
        tail = slice(success_step, None)
        assert np.all(e.extras["policy_version"][tail] == -1) and not e.intervention[tail].any()
        assert np.allclose(e.actions[tail], e.actions[success_step - 1])
        # a done fired in the tail credits its bonus to the chunk that finished the task
        rewards = np.zeros(len(e), np.float32)
        rewards[success_step + 2] = 1.0
        decisions = episode_decisions(e, rewards, 4, 0.99)
        last = decisions[-1]
        assert last["first"] < success_step and last["reward"] == pytest.approx(0.99 ** (success_step + 2 - last["first"]))
        assert sum(d["reward"] for d in decisions[:-1]) == 0
        # evaluation (nothing recorded) still ends at success
        assert actor.succeeds("reach_cube", 7)
        # settle_steps 0: the old ending, the last row the one before the successful step
        actor.settle_steps = 0
        short = actor.episode("reach_cube", 7)
        assert len(short) == short.meta.extra["success_step"] == success_step
    finally:
        actor.close()


def test_nobody_takes_over_a_finished_task(tiny_export):
    policy = make_policy(PolicyConfig(type="vla", options={"path": str(tiny_export), "backend": "torch"}))
    m = policy.metadata
    # a hair-trigger human that finishes the task the tiny policy cannot
    human = ScriptedHuman(ScriptedHumanConfig(threshold=0.0, patience=1, takeover_s=2.0, cooldown_s=0.0),
                          list(m["joint_names"]))
    actor = SimActor(policy, list(m["cameras"]), m["image_width"], m["image_height"], execute_steps=2, human=human)
    try:
        e = actor.episode("reach_cube", 3)
        assert e.meta.success and e.intervention.any()
        tail = e.intervention[e.meta.extra["success_step"]:]
        assert len(tail) == actor.settle_steps == 5 and not tail.any()
    finally:
        actor.close()
