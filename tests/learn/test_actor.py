"""SimActor with the simulated human and return-and-explore (what the benchmark's HIL arm runs)."""

import numpy as np

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
        # the human's steps carry no policy decision; the policy's steps do
        assert np.all(e.extras["policy_version"][human_steps] == -1)
        assert np.all(e.extras["policy_version"][~e.intervention] >= 0)
        decisions = episode_decisions(e, np.zeros(len(e), np.float32), m["chunk_length"], 0.99)
        assert sum(d["mask"].sum() for d in decisions) == len(e) - len(human_steps)
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
