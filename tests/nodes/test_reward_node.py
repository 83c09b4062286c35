"""reward_node with real rclpy over DDS and the tiny trained critic."""

import time

import numpy as np
import rclpy
from rclpy.parameter import Parameter
from sensor_msgs.msg import Image
from std_msgs.msg import Float32MultiArray, String

from robot_rl.nodes.reward_node import RewardNode
from robot_rl.ros import qos
from robot_rl.ros.conversions import image_to_msg
from tests.nodes.test_nodes import ros, wait  # noqa: F401 - the fixture


def test_reward_node_publishes_progress_and_refuses_unknown_instructions(ros, tiny_critic):  # noqa: F811
    node = ros(RewardNode(parameter_overrides=[Parameter("critic", value=str(tiny_critic)),
                                               Parameter("stride_s", value=0.2)]))
    cams = ros(rclpy.create_node("cameras"))
    pubs = {c: cams.create_publisher(Image, f"/camera/{c}/color/image_raw", qos.SENSOR_PUB) for c in ("front", "wrist")}
    instruction = cams.create_publisher(String, "/instruction", qos.LATCHED)
    got: list[Float32MultiArray] = []
    listener = ros(rclpy.create_node("listener"))
    listener.create_subscription(Float32MultiArray, "/reward/progress", got.append, qos.EVENTS)
    rng = np.random.default_rng(0)

    def tick():
        now = cams.get_clock().now().nanoseconds * 1e-9
        for c, pub in pubs.items():
            pub.publish(image_to_msg(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8), now, c))

    cams.create_timer(0.05, tick)
    instruction.publish(String(data="reach the red cube"))
    wait(lambda: len(got) >= 5, 15, "progress messages")
    data = np.array([m.data for m in got])
    assert data.shape[1] == 3 and np.isfinite(data).all()
    assert ((data[:, 1] >= 0) & (data[:, 1] <= 1)).all()  # value
    stamps = [float(m.layout.dim[0].label.split("=")[1]) for m in got]
    assert np.all(np.diff(stamps) >= 0.19)  # pairs at the stride, in order

    instruction.publish(String(data="make me a sandwich"))
    wait(lambda: node.instruction_error != "", 5, "the instruction to be refused")
    time.sleep(0.5)
    n = len(got)
    time.sleep(0.6)
    assert len(got) == n, "no progress for an instruction the critic cannot judge"
    assert "not one the critic was trained on" in node.instruction_error
