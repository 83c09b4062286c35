"""The cartesian action mode: the arm frame's kinematics against the simulated arm, its round trip, its
invariance to where the arm faces, bad geometry, and a cartesian VLA through training, export and
exploration."""

import math

import mujoco
import numpy as np
import pytest
import torch

from robot_rl.paths import data_path
from robot_rl.policy.arm_frame import (ArmGeometry, arm_joints, grip_pose, load_arm_geometry, simulated_arm_geometry,
                                       to_points, to_targets)
from robot_rl.policy.vla import VLAConfig

ARM = ["shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll"]


def _random_joints(rng, n):
    q = np.zeros((n, 6))
    q[:, :5] = rng.uniform(-1.0, 1.0, (n, 5)) * [1.2, 0.6, 0.6, 0.8, 1.5]
    q[:, 5] = rng.uniform(0.0, 0.03, n)
    return torch.tensor(q)


def _pointing_down_targets(geometry, q, rng, horizon=6):
    """Target chunks (B, H, 6) near each grip point, as an IK-driven expert commands them."""
    grip, heading = grip_pose(geometry, q)
    position = grip[:, None, :] + torch.tensor(rng.normal(0.0, 0.04, (len(q), horizon, 3)))
    yaw = heading[:, None] + torch.tensor(rng.normal(0.0, 0.3, (len(q), horizon)))
    gripper = torch.tensor(rng.uniform(0.0, 0.03, (len(q), horizon, 1)))
    return torch.cat([arm_joints(geometry, position, yaw), gripper], dim=-1)


def test_forward_kinematics_is_the_simulated_arm():
    model = mujoco.MjModel.from_xml_path(str(data_path("sim", "tabletop.xml")))
    data = mujoco.MjData(model)
    geometry = simulated_arm_geometry()
    q = _random_joints(np.random.default_rng(0), 20)
    position, _ = grip_pose(geometry, q)
    for row, expected in zip(q.numpy(), position.numpy()):
        for name, value in zip(ARM, row):
            data.qpos[model.joint(name).qposadr[0]] = value
        mujoco.mj_kinematics(model, data)
        np.testing.assert_allclose(data.site("grip").xpos, expected, atol=1e-6)


def test_points_and_targets_are_each_others_inverse():
    geometry = simulated_arm_geometry()
    rng = np.random.default_rng(1)
    q = _random_joints(rng, 32)
    targets = _pointing_down_targets(geometry, q, rng)
    points = to_points(geometry, q, targets)
    assert points.shape == (32, 6, 5)
    torch.testing.assert_close(to_targets(geometry, q, points), targets, atol=1e-7, rtol=0)
    # the tool points down at every target the inverse kinematics makes
    tilt = targets[..., 1] + targets[..., 2] + targets[..., 3]
    torch.testing.assert_close(tilt, torch.zeros_like(tilt), atol=1e-9, rtol=0)


def test_a_move_is_the_same_whichever_way_the_arm_faces():
    geometry = simulated_arm_geometry()
    q = torch.tensor([[0.0, 0.3, 0.2, -0.5, 0.1, 0.01]], dtype=torch.float64)
    turned = q.clone()
    turned[0, 0] = 0.8
    points = torch.tensor([[[0.05, 0.0, -0.02, 0.1, 0.02], [0.02, -0.03, 0.0, 0.0, 0.0]]], dtype=torch.float64)
    ahead, beside = to_targets(geometry, q, points), to_targets(geometry, turned, points)
    # the whole chunk turns with the arm: the pan by 0.8, every other joint the same
    torch.testing.assert_close(beside[..., 0] - ahead[..., 0], torch.full((1, 2), 0.8, dtype=torch.float64))
    torch.testing.assert_close(beside[..., 1:], ahead[..., 1:])
    # "forward" is along the arm: 5 cm forward from a straight-ahead arm is +x in the world
    start, _ = grip_pose(geometry, q)
    moved, _ = grip_pose(geometry, ahead[:, 0])
    torch.testing.assert_close(moved - start, torch.tensor([[0.05, 0.0, -0.02]], dtype=torch.float64))


def test_bad_geometry_names_what_is_wrong(tmp_path):
    with pytest.raises(ValueError, match=r"expected fields \['forearm', 'shoulder', 'tool', 'upper_arm'\]"):
        ArmGeometry.from_dict({"shoulder": [0, 0, 0.1], "upper_arm": 0.2})
    with pytest.raises(ValueError, match="arm_geometry.tool: expected a positive length"):
        ArmGeometry.from_dict({"shoulder": [0, 0, 0.1], "upper_arm": 0.2, "forearm": 0.2, "tool": -0.1})
    bad = tmp_path / "arm.yaml"
    bad.write_text("shoulder: [0, 0]\nupper_arm: 0.2\nforearm: 0.2\ntool: 0.1\n")
    with pytest.raises(ValueError, match=r"arm geometry .*arm.yaml: arm_geometry.shoulder: expected \[x, y, z\]"):
        load_arm_geometry(str(bad))
    good = tmp_path / "so101.yaml"
    good.write_text("shoulder: [0.0, 0.0, 0.12]\nupper_arm: 0.116\nforearm: 0.135\ntool: 0.1\n")
    assert load_arm_geometry(str(good)).forearm == pytest.approx(0.135)
    geometry = simulated_arm_geometry().to_dict()
    with pytest.raises(ValueError, match="a pan/lift/elbow/flex/roll arm plus a gripper"):
        VLAConfig(joint_names=["a", "b", "c"], action_mode="cartesian", arm_geometry=geometry)


def test_a_cartesian_policy_trains_exports_and_explores_in_the_arm_frame(tiny_cartesian_export, encoder):
    from robot_rl.inference.backends import read_metadata
    from robot_rl.learn.bc import load_checkpoint, model_from_checkpoint
    from robot_rl.learn.ppo import chunk_log_prob
    from robot_rl.policy.base import Observation, PolicyConfig, make_policy

    checkpoint, metrics, out = tiny_cartesian_export
    assert metrics["eval_end"]["mse"] < 0.7 * metrics["eval_start"]["mse"]
    m = read_metadata(out)
    assert m["action_mode"] == "cartesian" and m["model_config"]["arm_geometry"] == simulated_arm_geometry().to_dict()
    shapes = {o["name"]: o["shape"] for o in m["outputs"]}
    assert shapes["actions"] == ["batch", 4, 6] and shapes["action_log_std"] == ["batch", 4, 5]

    joints = m["joint_names"]
    q = np.array([0.1, 0.4, 0.1, -0.5, 0.0, 0.02])
    frame = np.zeros((24, 32, 3), np.uint8)
    observation = Observation(1.0, joints, q, "reach the red cube", {"front": frame, "wrist": frame})
    chunks = {}
    for explore in (False, True):
        policy = make_policy(PolicyConfig(type="vla", options={"path": str(out), "backend": "onnxruntime",
                                                                 "explore": explore, "explore_seed": 3}))
        policy.reset("reach the red cube")
        chunks[explore] = policy.act(observation).positions
    mean, explored = chunks[False], chunks[True]
    assert mean.shape == explored.shape == (4, 6) and not np.allclose(mean, explored)
    # the noise was drawn in the arm frame: the explored targets still point the tool down, and the
    # gripper's noise is the gripper's own
    tilt = explored[:, 1] + explored[:, 2] + explored[:, 3]
    np.testing.assert_allclose(tilt, 0.0, atol=1e-6)

    # the learner's view: the executed chunk read back through the forward kinematics has a finite
    # log-probability under the policy that sampled it
    model = model_from_checkpoint(load_checkpoint(str(checkpoint))).eval()
    images = {c: torch.zeros(1, 24, 32, 3, dtype=torch.uint8) for c in ("front", "wrist")}
    text = torch.as_tensor(encoder.encode("reach the red cube"))[None]
    with torch.no_grad():
        log_prob, _, _ = chunk_log_prob(model, images, torch.tensor(q[None], dtype=torch.float32), text,
                                        torch.tensor(explored[None], dtype=torch.float32), torch.ones(1, 4))
        log_prob_mean, _, _ = chunk_log_prob(model, images, torch.tensor(q[None], dtype=torch.float32), text,
                                             torch.tensor(mean[None], dtype=torch.float32), torch.ones(1, 4))
    assert math.isfinite(float(log_prob)) and float(log_prob_mean) > float(log_prob)


def test_the_shipped_cartesian_policy_reaches_the_cube():
    """policies/sim_cartesian through ONNX Runtime in the simulated world: its arm-frame moves, turned into
    joint targets inside the graph, take the gripper to the cube (its metadata: reach 1.00 on 20 layouts)."""
    from robot_rl.inference.backends import read_metadata
    from robot_rl.policy.base import PolicyConfig, make_policy
    from robot_rl.policy.evaluate import evaluate_policy

    path = data_path("policies", "sim_cartesian")
    m = read_metadata(path)
    assert m["action_mode"] == "cartesian" and m["evaluation"]["per_task"]["reach_cube"] == 1.0
    policy = make_policy(PolicyConfig(type="vla", options={"path": str(path), "backend": "onnxruntime"}))
    result = evaluate_policy(policy, m["cameras"], m["image_width"], m["image_height"], m["control_rate_hz"],
                             tasks=["reach_cube"], episodes=2)
    assert result["per_task"]["reach_cube"] == 1.0
