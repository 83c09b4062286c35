"""The policy node takes the learner's weights over CurveZMQ and reports the version it runs."""

import numpy as np
import pytest
import torch
from rclpy.parameter import Parameter

from robot_rl.learn.learner import load_start_policy, state_bytes
from robot_rl.nodes.policy_node import PolicyNode
from robot_rl.transport.links import WeightsPublisher
from robot_rl.transport.security import ServerKeys, generate_keypair
from tests.nodes.test_nodes import ros, wait  # noqa: F401 - the fixture


def test_policy_node_swaps_in_published_weights_and_refuses_half_configured_keys(ros, tmp_path):
    keys = tmp_path / "keys"
    for name in ("learner", "robot1"):
        generate_keypair(keys, name)
    (keys / "allowed").mkdir()
    (keys / "allowed" / "robot1.key").write_bytes((keys / "robot1.key").read_bytes())
    publisher = WeightsPublisher("tcp://127.0.0.1:*", ServerKeys(str(keys / "learner.key_secret"), str(keys / "allowed")))
    try:
        node = ros(PolicyNode(parameter_overrides=[
            Parameter("policy", value="vla"), Parameter("backend", value="torch"), Parameter("explore", value=True),
            Parameter("weights_address", value=publisher.address),
            Parameter("robot_secret_key", value=str(keys / "robot1.key_secret")),
            Parameter("learner_public_key", value=str(keys / "learner.key"))]))
        assert node.policy.version_number == 0 and node.policy.explore
        model, _ = load_start_policy("policies/sim_default")
        with torch.no_grad():
            model.action_head.bias += 0.25
        wait(lambda: publisher.subscribers == 1, 10, "the policy node subscribed")
        publisher.publish(1, model.config.to_dict(), state_bytes(model))
        wait(lambda: node.policy.version_number == 1, 20, "weights v1 in the policy node")
        running = node.policy.backend.model.state_dict()["action_head.bias"]
        assert np.allclose(running.numpy(), model.state_dict()["action_head.bias"].numpy())
        assert node.weights.errors == 0
    finally:
        publisher.close()
    with pytest.raises(ValueError, match="robot_secret_key and learner_public_key"):
        PolicyNode(parameter_overrides=[Parameter("policy", value="vla"), Parameter("backend", value="torch"),
                                        Parameter("weights_address", value="tcp://127.0.0.1:5999")])
