"""reward_node: camera frames + instruction in, task progress out.

Subscribes to ``/camera/<cam>/color/image_raw`` for each camera the critic uses and ``/instruction``;
publishes ``/reward/progress`` (std_msgs/Float32MultiArray ``[delta, value, done_prob]``, one message
per scored pair, in order; ``layout.dim[0].label`` carries ``stamp=<seconds>`` of the later frame so a
recorder can align it with its steps) and ``/reward/status`` (diagnostics). A new ``/instruction``
starts a new episode (value back to 0). The logic is ``robot_rl/reward/stream.py``; scoring runs on a
worker thread so a slow or remote critic never blocks the frame callbacks.

The critic is a local export or checkpoint, or ``tcp://host:port`` of a ``robot-rl critic-server``.
Instructions the critic was not trained on are refused (nothing is published; the status says why)
unless ``reference_episode`` gives one-shot context or ``allow_unseen_instructions`` is set.
"""

from __future__ import annotations

import threading
import time

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from sensor_msgs.msg import Image
from std_msgs.msg import Float32MultiArray, MultiArrayDimension, String

from robot_rl.paths import data_path
from robot_rl.reward.base import CriticError, CriticUnavailableError, make_critic
from robot_rl.reward.shaping import RewardConfig
from robot_rl.reward.stream import ProgressStream
from robot_rl.ros import qos
from robot_rl.ros.conversions import diagnostics_msg, msg_to_image, to_sec
from robot_rl.ros.node_utils import declare, now_sec, run_node
from robot_rl.stats import Window

DEFAULTS = {
    "critic": "",  # export dir, .pt checkpoint or tcp://host:port (default: policies/sim_critic of this package)
    "backend": "auto",  # local critic: auto | onnxruntime | torch
    "timeout_s": 2.0,  # remote critic: deadline of one request
    "stride_s": 0.2,  # seconds between the two frames of a pair
    "max_batch": 8,  # pairs scored in one critic call when scoring falls behind
    "reference_episode": "",  # an episode directory of a successful run of the task: one-shot context
    "allow_unseen_instructions": False,
    "done_threshold": 0.5,
    "done_frames": 2,
    "instruction": "",
}


def load_references(episode_dir: str, cameras: list[str]) -> dict[str, np.ndarray]:
    from robot_rl.data.episodes import read_episode
    from robot_rl.reward.labels import success_step

    ep = read_episode(episode_dir)
    if not ep.meta.success:
        raise ValueError(f"reference_episode {episode_dir} did not succeed; one-shot context needs a successful episode")
    missing = [c for c in cameras if c not in ep.images]
    if missing:
        raise ValueError(f"reference_episode {episode_dir} lacks cameras {missing}")
    end = min(success_step(ep), len(ep) - 1) + 1
    return {c: ep.images[c][:end] for c in cameras}


class RewardNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__("reward", **kwargs)
        p = declare(self, DEFAULTS)
        self.critic = make_critic(p["critic"] or str(data_path("policies", "sim_critic")), backend=p["backend"],
                                  timeout_s=float(p["timeout_s"]))
        references = load_references(p["reference_episode"], self.critic.cameras) if p["reference_episode"] else None
        self.stream = ProgressStream(self.critic, float(p["stride_s"]), int(p["max_batch"]), references,
                                     bool(p["allow_unseen_instructions"]),
                                     RewardConfig(done_threshold=float(p["done_threshold"]), done_frames=int(p["done_frames"])))
        self.images: dict[str, Image] = {}
        self.instruction_error = ""
        self.published = 0
        self.score_ms = Window(300)
        self.wake = threading.Event()
        self.stopping = False
        for cam in self.critic.cameras:
            self.create_subscription(Image, f"/camera/{cam}/color/image_raw",
                                     lambda msg, cam=cam: self.on_image(cam, msg), qos.SENSOR_SUB)
        self.create_subscription(String, "/instruction", self.on_instruction, qos.LATCHED)
        self.progress_pub = self.create_publisher(Float32MultiArray, "/reward/progress", qos.EVENTS)
        self.status_pub = self.create_publisher(DiagnosticArray, "/reward/status", qos.STATUS)
        self.create_timer(1.0, self.publish_status)
        self.worker = threading.Thread(target=self.score_loop, name="reward-scoring", daemon=True)
        self.worker.start()
        if p["instruction"]:
            self.on_instruction(String(data=p["instruction"]))
        self.get_logger().info(f"critic: {self.critic.describe()}; pairs {p['stride_s']} s apart")

    def on_instruction(self, msg: String) -> None:
        try:
            self.stream.reset(msg.data)
            self.instruction_error = ""
            self.get_logger().info(f"new episode: '{msg.data}'")
        except CriticError as exc:
            self.instruction_error = f"/instruction: {exc}"
            self.get_logger().error(f"{self.instruction_error}; no progress is published")

    def on_image(self, cam: str, msg: Image) -> None:
        self.images[cam] = msg
        if len(self.images) < len(self.critic.cameras):
            return
        try:
            frames = {c: msg_to_image(m, f"/camera/{c}/color/image_raw") for c, m in self.images.items()}
        except ValueError as exc:
            self.get_logger().error(f"bad frame, not scored: {exc}", throttle_duration_sec=2.0)
            return
        if self.stream.offer({c: to_sec(m.header.stamp) for c, m in self.images.items()}, frames):
            self.wake.set()

    def score_loop(self) -> None:
        while not self.stopping:
            self.wake.wait(0.5)
            self.wake.clear()
            while self.stream.has_work() and not self.stopping:
                t0 = time.perf_counter()
                try:
                    outputs = self.stream.process()
                except (CriticError, CriticUnavailableError) as exc:
                    self.get_logger().error(f"critic failed, pair skipped: {exc}", throttle_duration_sec=2.0)
                    continue
                self.score_ms.add((time.perf_counter() - t0) * 1e3)
                for out in outputs:
                    msg = Float32MultiArray(data=[out.delta, out.value, out.done_prob])
                    msg.layout.dim = [MultiArrayDimension(label=f"stamp={out.stamp:.6f}", size=3, stride=3)]
                    self.progress_pub.publish(msg)
                    self.published += 1

    def publish_status(self) -> None:
        s = self.stream
        values = {"critic": self.critic.describe(), "published": self.published, "scored": s.scored,
                  "errors": s.errors, "last_error": s.last_error, "value": f"{s.tracker.value:.3f}",
                  "done": s.tracker.done, "score_ms_p50": f"{self.score_ms.percentile(50):.1f}",
                  "score_ms_p99": f"{self.score_ms.percentile(99):.1f}"}
        if self.instruction_error:
            level, message = "error", self.instruction_error
        elif s.last_error and s.errors:
            level, message = "warn", s.last_error
        else:
            level, message = "ok", f"value {s.tracker.value:.2f}"
        self.status_pub.publish(diagnostics_msg("reward", level, message, values, now_sec(self)))

    def close(self) -> None:
        self.stopping = True
        self.wake.set()
        self.worker.join(timeout=2.0)
        self.critic.close()


def main(args=None) -> int:
    return run_node(RewardNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
