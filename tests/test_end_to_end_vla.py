"""End to end with the shipped VLA. A module of its own: the oracle graph of test_end_to_end.py is
module-scoped, and two graphs on one ROS domain would command each other's arm."""

import time

import numpy as np

from robot_rl.graph import SimGraph
from robot_rl.ros.conversions import to_sec

RATE = 10.0


def positions(client):
    return np.array(client.rec.joint_states.position)


def test_the_shipped_vla_drives_the_simulated_arm_through_the_graph(tmp_path):
    """The policy node runs policies/sim_default (ONNX Runtime) on the bridge's frames; its commands move the arm."""
    overrides = {"policy": "vla", "backend": "onnxruntime", "task": "reach_cube", "control_rate_hz": str(RATE)}
    with open(tmp_path / "nodes.log", "w") as log, SimGraph(overrides, out=log) as g:
        client = g.client
        client.wait_ready(timeout=90)
        client.reset()
        reset_at = time.time()
        with client.lock:
            client.rec.commands.clear()
        client.wait_for(lambda: to_sec(client.rec.joint_states.header.stamp) > reset_at, 5, "a joint state after the reset")
        start = positions(client)
        client.wait_for(lambda: sum(c.source == "policy" and c.stamp > reset_at for c in client.rec.commands) >= 10, 20,
                        "ten commands from the VLA through the safety node")
        # the arm follows the VLA
        client.wait_for(lambda: np.linalg.norm(positions(client) - start) > 0.05, 5, "the arm to move")
        client.wait_for(lambda: client.rec.status.get("/policy/status", {}).get("policy") == "vla", 5, "/policy/status")
        status = client.rec.status["/policy/status"]
        assert status["model_version"].startswith("bc-") and float(status["inference_ms_p50"]) > 0
    assert g.runner.alive() == []
