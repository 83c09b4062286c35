"""Return-and-explore: world snapshots, the failure-state bank, and the sim bridge resetting into them."""

import numpy as np
import rclpy
from rclpy.parameter import Parameter
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool, Float64MultiArray
from std_srvs.srv import Trigger

from robot_rl.ros import qos
from robot_rl.sim.failure_states import FailureStates
from robot_rl.sim.tabletop import TabletopWorld
from robot_rl.sim.world import WorldConfig
from tests.nodes.test_nodes import ros, wait  # noqa: F401 - the fixture


def test_a_restored_snapshot_continues_exactly_like_the_original():
    world = TabletopWorld(WorldConfig(cameras=["front"], image_width=32, image_height=24))
    try:
        world.reset(3, "push_cube_to_pad")
        target = world.joint_positions() + np.array([0.3, 0.2, -0.2, 0.1, 0.0, 0.0])
        for _ in range(5):
            world.step(target)
        saved = world.snapshot()
        for _ in range(5):
            world.step(target)
        after_a, image_a = world.joint_positions(), world.render("front")
        world.reset(9, "reach_cube")  # somewhere else entirely
        world.restore(saved)
        assert world.task_name == "push_cube_to_pad" and world.time == 0.0
        assert world.task_progress() == 0.0  # progress counts from where this episode starts
        for _ in range(5):
            world.step(target)
        np.testing.assert_allclose(world.joint_positions(), after_a, atol=1e-9)
        assert np.abs(world.render("front").astype(int) - image_a).max() <= 1
    finally:
        world.close()


def test_the_bank_keeps_the_newest_states_retires_used_ones_and_survives_a_restart(tmp_path):
    bank = FailureStates(tmp_path, capacity=3, max_uses=2)
    for i in range(5):
        bank.add({"qpos": np.full(3, float(i)), "task": np.array("reach_cube")})
    assert len(bank) == 3
    kept = sorted(float(np.load(p)["qpos"][0]) for p in bank.files())
    assert kept == [2.0, 3.0, 4.0]
    assert len(FailureStates(tmp_path)) == 3  # on disk: a restarted sim has them
    for _ in range(6):  # 3 states x 2 uses each
        assert bank.sample() is not None
    assert len(bank) == 0 and bank.sample() is None


def test_sim_bridge_saves_the_world_when_the_human_takes_over_and_resets_into_it(ros, tmp_path):
    from robot_rl.nodes.sim_bridge_node import SimBridgeNode

    ros(SimBridgeNode(parameter_overrides=[
        Parameter("cameras", value=["front"]), Parameter("image_width", value=32), Parameter("image_height", value=24),
        Parameter("task", value="reach_cube"), Parameter("return_and_explore", value=True),
        Parameter("return_probability", value=1.0), Parameter("failure_states_dir", value=str(tmp_path / "bank"))]))
    client = ros(rclpy.create_node("client"))
    joints = []
    client.create_subscription(JointState, "/joint_states", joints.append, qos.SENSOR_SUB)
    engaged = client.create_publisher(Bool, "/teleop/engaged", qos.COMMAND)
    reset = client.create_client(Trigger, "/sim/reset")
    wait(lambda: joints and reset.service_is_ready(), 20, "sim bridge up")

    def call_reset():
        future = reset.call_async(Trigger.Request())
        wait(future.done, 20, "reset answered")
        return future.result().message

    assert "restored" not in call_reset()  # nothing in the bank yet: a normal reset
    command = client.create_publisher(Float64MultiArray, "/robot/command", qos.COMMAND)
    away = [0.6, 0.4, 0.2, -0.2, 0.0, 0.04]  # drive the arm well away from home first
    wait(lambda: command.publish(Float64MultiArray(data=away)) or abs(joints[-1].position[0] - 0.6) < 0.05, 10,
         "the arm moved away from home")
    wait(lambda: engaged.get_subscription_count() > 0, 10, "the bridge listens to /teleop/engaged")
    engaged.publish(Bool(data=True))
    bank = FailureStates(tmp_path / "bank")
    wait(lambda: len(bank) == 1, 10, "a failure state saved when the human took over")
    engaged.publish(Bool(data=False))
    message = call_reset()
    assert message.startswith("restored failure state") and "task=reach_cube" in message
    joints.clear()
    wait(lambda: len(joints) > 0, 5, "joint states after the restore")
    restored = np.array(joints[0].position)
    assert abs(restored[0] - 0.6) < 0.05 and abs(restored[1] - 0.4) < 0.05  # where it was saved, not home
