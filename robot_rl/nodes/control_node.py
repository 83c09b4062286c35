"""control_node: the policy node and the safety node in one process, chunks handed over by a call.

The same two nodes as ``policy_node`` and ``safety_node``, with the same names, parameters and
topics, composed the way ROS 2 composes nodes into a container: each keeps its own single-threaded
executor on its own thread, so the safety node's watchdog, e-stop and teleop callbacks never wait
for an inference. What changes is the policy -> safety hand-off: each chunk goes to
``SafetyNode.accept_chunk`` by a direct call on the policy's thread (under the safety node's lock)
instead of a DDS hop, which on a 2-core machine costs two thread wake-ups and most of a millisecond.
``/policy/trajectory`` is still published, for the episode recorder and anyone watching; the safety
node does not subscribe to it here.

Parameters come from both nodes' files (``--params-file config/policy.yaml --params-file
config/safety.yaml``, whose top-level keys are the node names). Do not rename the process's nodes with
``__node:=`` (it would rename both): the launch entry has no ``name``.
"""

from __future__ import annotations

from robot_rl.nodes.policy_node import PolicyNode
from robot_rl.nodes.safety_node import SafetyNode
from robot_rl.ros.node_utils import run_nodes


def compose() -> list:
    safety = SafetyNode(policy_chunks="direct")
    try:
        policy = PolicyNode()
    except BaseException:
        safety.destroy_node()
        raise
    policy.chunk_sink = safety.accept_chunk
    return [safety, policy]


def main(args=None) -> int:
    return run_nodes(compose, args)


if __name__ == "__main__":
    raise SystemExit(main())
