"""End to end: launch/sim_launch.yaml through the launch runner, commands reach the simulated arm, the
oracle solves a task, and e-stop freezes the arm within a period; in both layouts: one process per
node, and the policy and safety nodes composed in one control_node process (``composed:=true``)."""

import time

import numpy as np
import pytest

from robot_rl.graph import SimGraph
from std_msgs.msg import Bool

RATE = 10.0


@pytest.fixture(scope="module", params=["processes", "composed"])
def graph(request, tmp_path_factory):
    log = open(tmp_path_factory.mktemp("e2e") / "nodes.log", "w")
    overrides = {"policy": "oracle", "task": "reach_cube", "control_rate_hz": str(RATE),
                 "composed": str(request.param == "composed").lower()}
    with SimGraph(overrides, out=log) as g:
        g.client.wait_ready(timeout=90)
        yield g
    log.close()
    assert g.runner.alive() == []


def positions(client):
    msg = client.rec.joint_states
    return np.array(msg.position)


def test_commands_reach_the_simulated_arm_and_the_task_succeeds(graph):
    client = graph.client
    assert "task=reach_cube" in client.reset()
    start = positions(client)
    client.wait_for(lambda: client.rec.success, 15, "reach_cube success from the oracle through the graph")
    assert np.linalg.norm(positions(client) - start) > 0.1  # the arm moved
    sources = {c.source for c in client.rec.commands}
    assert "policy" in sources
    graph.check_alive()


def test_estop_stops_motion_within_one_control_period(graph):
    client = graph.client
    client.reset()
    time.sleep(0.5)  # the arm is on its way to the cube
    moving = np.abs(np.array(client.rec.joint_states.velocity)).max()
    assert moving > 0.05
    n_before = len(client.rec.commands)
    sent = time.time()
    client.estop_pub.publish(Bool(data=True))
    client.wait_for(lambda: any(c.source == "estop" for c in client.rec.commands[n_before:]), 2, "an e-stop command")
    first = next(c for c in client.rec.commands[n_before:] if c.source == "estop")
    assert first.received - sent < 1.0 / RATE
    time.sleep(0.6)
    tail = client.rec.commands[-3:]
    assert all(c.source == "estop" for c in tail)
    q1 = positions(client)
    time.sleep(0.5)
    assert np.abs(positions(client) - q1).max() < 2e-3  # frozen
    client.estop_pub.publish(Bool(data=False))
    client.wait_for(lambda: client.rec.commands[-1].source == "policy", 5, "motion to resume after release")
    graph.check_alive()

