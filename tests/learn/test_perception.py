"""robot-rl bench perception: a state policy, the oracle under noise, a probe of a policy's image features."""

import json
import subprocess
import sys

import math

import numpy as np
import pytest
import torch

from robot_rl.learn.perception import PerceptionConfig, StatePolicy, _state, oracle_success_rate
from robot_rl.sim.oracle import ArmKinematics, ScriptedOracle
from robot_rl.sim.tabletop import TabletopWorld
from robot_rl.sim.world import ObjectPose, WorldConfig


@pytest.fixture(scope="module")
def world_and_oracle():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the bench runs it; a small MLP only loses to thread hand-offs
    world = TabletopWorld(WorldConfig(control_rate_hz=10.0, cameras=[]))
    yield world, ScriptedOracle(ArmKinematics.from_model(world.model), world.control_period)
    world.close()
    torch.set_num_threads(threads)


def test_a_state_policy_cloned_from_the_oracle_reaches_and_needs_to_know_where_the_cube_is(world_and_oracle):
    config = PerceptionConfig(task="reach_cube", demos=30, train_steps=1500, layouts=6)
    policy = StatePolicy(config, *world_and_oracle)
    training = policy.train()
    assert training["samples"] > 30 * 5
    assert policy.success_rate(4) >= 5 / 6
    # 10 cm of noise on where the cube is, redrawn at every query: the fingers miss it
    assert policy.success_rate(4, noise_m=0.1) <= 3 / 6


def test_a_state_policy_in_the_arms_frame_reaches(world_and_oracle):
    config = PerceptionConfig(task="reach_cube", demos=30, train_steps=1500, layouts=6, state_frame="arm")
    policy = StatePolicy(config, *world_and_oracle)
    policy.train()
    assert policy.observe(*_first_observation(world_and_oracle[0])).shape == (5 + 3 * 3,)  # no pan joint
    assert policy.success_rate(4) >= 5 / 6


def _first_observation(world):
    world.reset(0, "reach_cube")
    return world.joint_positions(), world.object_poses()


def test_the_arm_frame_does_not_change_when_the_scene_turns_about_the_base():
    base = np.array([0.05, -0.02])
    q = np.array([0.3, -0.4, 0.9, 0.2, 0.1, 0.02])
    objects = {"cube": ObjectPose(np.array([0.30, 0.10, 0.02]), np.array([1.0, 0, 0, 0])),
               "pad": ObjectPose(np.array([0.25, -0.12, 0.001]), np.array([1.0, 0, 0, 0])),
               "button": ObjectPose(np.array([0.40, 0.05, 0.03]), np.array([1.0, 0, 0, 0]))}
    turn = 0.7
    rotation = np.array([[math.cos(turn), -math.sin(turn)], [math.sin(turn), math.cos(turn)]])
    turned = {name: ObjectPose(np.r_[base + rotation @ (pose.position[:2] - base), pose.position[2]], pose.quaternion)
              for name, pose in objects.items()}
    turned_q = q + np.r_[turn, np.zeros(5)]
    np.testing.assert_allclose(_state(q, objects, "arm", base), _state(turned_q, turned, "arm", base), atol=1e-6)
    # the world's frame sees the turn
    assert np.abs(_state(q, objects) - _state(turned_q, turned)).max() > 0.05


@pytest.mark.parametrize("task", ["push_cube_to_pad", "pick_cube"])
def test_a_cartesian_chunk_reads_the_oracles_joint_targets_and_gives_them_back(world_and_oracle, task):
    world, oracle = world_and_oracle
    policy = StatePolicy(PerceptionConfig(task=task, state_frame="arm", state_action="cartesian"), world, oracle)
    world.reset(3, task)
    oracle.reset(task)
    for _ in range(6):  # partway along, so the chunk moves the grip point and turns the fingers
        world.step(oracle.act(world.joint_positions(), world.object_poses())[0])
    q = world.joint_positions()
    joint_targets = oracle.act(q, world.object_poses(), chunk_length=8)
    label = policy.label(q, joint_targets)
    assert label.shape == (8 * 5,)
    assert np.abs(label.reshape(8, 5)[:, :3]).max() > 0.01  # the grip point moves (metres, the arm's frame)
    np.testing.assert_allclose(policy.targets(q, label), joint_targets, atol=1e-6)


def test_a_cartesian_move_is_the_same_whichever_way_the_arm_faces(world_and_oracle):
    world, oracle = world_and_oracle
    policy = StatePolicy(PerceptionConfig(state_frame="arm", state_action="cartesian"), world, oracle)
    world.reset(3, "push_cube_to_pad")
    q = world.joint_positions()
    forward = np.tile([0.02, 0.0, 0.0, 0.0, 0.0], 8)  # 2 cm along the arm's heading at every point
    for pan in (q[0], q[0] + 0.5):
        turned = np.r_[pan, q[1:]]
        grip, _ = oracle.kin.forward(turned)
        moved, _ = oracle.kin.forward(policy.targets(turned, forward)[0])
        np.testing.assert_allclose(moved - grip, [0.02 * np.cos(pan), 0.02 * np.sin(pan), 0.0], atol=1e-6)


def test_an_unknown_state_frame_is_named(world_and_oracle):
    with pytest.raises(ValueError, match="state_frame.*world, arm.*'polar'"):
        StatePolicy(PerceptionConfig(state_frame="polar"), *world_and_oracle)
    with pytest.raises(ValueError, match="state_action.*joint, cartesian.*'torque'"):
        StatePolicy(PerceptionConfig(state_action="torque"), *world_and_oracle)


def test_the_oracle_pushes_through_millimetres_of_noise_and_not_through_centimetres(world_and_oracle):
    config = PerceptionConfig(layouts=4)
    assert oracle_success_rate(config, *world_and_oracle, noise_m=0.0) == 1.0
    assert oracle_success_rate(config, *world_and_oracle, noise_m=0.03) <= 0.5


def test_bench_perception_quick_writes_json(tiny_export, tmp_path):
    out = tmp_path / "perception.json"
    proc = subprocess.run([sys.executable, "-m", "robot_rl.cli", "bench", "perception", "--quick", "--state-dagger",
                           "--state-frame", "arm", "--state-action", "cartesian", "--policy", str(tiny_export),
                           "--json", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(out.read_text())
    # parts 1 and 3 ran in the arm's frame, with Cartesian chunks
    assert report["config"]["state_frame"] == "arm" and report["config"]["state_action"] == "cartesian"
    rows = report["state_policy"]
    for key in ("execute_4", "execute_1", "execute_4_objects_frozen_at_start", "execute_4_cube_noise_5mm"):
        assert 0.0 <= rows[key] <= 1.0
    assert report["oracle"]["cube_noise_5mm"] >= 0.0
    [probe] = report["image_features_probe"]
    assert probe["test_frames"] > 0 and probe["all cameras"]["median_mm"] > 0
    assert set(probe) >= {"front", "wrist", "all cameras"}
    # part 3: a policy cloned from 3 demonstrations drifts, the simulated human steps in and finishes the
    # episodes, and its steps become training data
    dagger = report["state_dagger"]["reach_cube"]
    assert dagger["human_steps"] > 0 and dagger["training_successes"] == 4
    assert set(dagger["success"]) == {"0", "2", "4"} and 0.0 <= dagger["refit_on_everything"] <= 1.0
    assert set(report["state_dagger_mean"]) == {"start", "end", "refit_on_everything"}


def test_bench_perception_names_an_unknown_task(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "robot_rl.cli", "bench", "perception", "--quick", "--task", "juggle",
                           "--json", str(tmp_path / "x.json")], capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "juggle" in proc.stderr


@pytest.fixture(scope="module")
def aux_checkpoint(tiny_demos, tmp_path_factory, encoder):
    """The tiny VLA trained a few steps with train-bc's auxiliary object head (--objects-coef)."""
    from robot_rl.learn.bc import BCConfig, train_bc
    from tests.conftest import TINY_MODEL

    out = tmp_path_factory.mktemp("aux") / "aux.pt"
    train_bc(BCConfig(data=str(tiny_demos), out=str(out), steps=5, batch_size=8, objects_coef=1.0, model=dict(TINY_MODEL)),
             encoder=encoder, progress=False, log=lambda *_: None)
    return out


def test_estimates_replace_only_the_named_objects_and_log_the_heads_error(aux_checkpoint):
    from robot_rl.learn.perception import ObjectEstimates

    estimates = ObjectEstimates(str(aux_checkpoint))
    world = TabletopWorld(estimates.world_config())
    try:
        world.reset(10000, "push_cube_to_pad")
        truth = world.object_poses()
        seen = estimates.replace(world, truth, ("cube",))
    finally:
        world.close()
    assert seen["pad"] is truth["pad"] and seen["button"] is truth["button"]
    assert not np.allclose(seen["cube"].position, truth["cube"].position)  # a 5-step head is not the simulator
    moved_mm = np.linalg.norm(seen["cube"].position[:2] - truth["cube"].position[:2]) * 1e3
    assert estimates.errors_mm["cube"] == [pytest.approx(moved_mm)]
    assert all(len(errors) == 1 for errors in estimates.errors_mm.values())  # every object's error, estimated or not


def test_estimates_name_a_checkpoint_without_an_object_head(tiny_checkpoint):
    from robot_rl.learn.perception import ObjectEstimates

    with pytest.raises(ValueError, match="no auxiliary object head.*--objects-coef"):
        ObjectEstimates(str(tiny_checkpoint[0]))


def test_bench_perception_quick_evaluates_the_state_policy_on_a_heads_estimates(aux_checkpoint, tmp_path):
    out = tmp_path / "perception.json"
    proc = subprocess.run([sys.executable, "-m", "robot_rl.cli", "bench", "perception", "--quick",
                           "--estimates-from", str(aux_checkpoint), "--json", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    part = json.loads(out.read_text())["estimated_objects"]
    assert part["checkpoint"] == str(aux_checkpoint)
    for label in ("cube", "all objects"):
        assert 0.0 <= part[label]["success"] <= 1.0 and part[label]["queries"] > 0
        assert 0 < part[label]["cube_error_mm"]["median"] <= part[label]["cube_error_mm"]["p90"]
