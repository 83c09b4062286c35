"""policy_node: observations in, action chunks out.

Subscribes to ``/camera/<cam>/color/image_raw`` for each configured camera, ``/joint_states`` and
``/instruction`` (plus ``/sim/object_poses`` when the policy needs privileged simulator state).
Each complete set of camera frames (every camera has a frame newer than those last used) triggers one
inference if every input is fresh enough (``max_observation_age``); the chunk goes out on
``/policy/trajectory`` stamped with the newest frame's time.
``/policy/status`` reports inference latency percentiles, the achieved rate and why frames were
skipped. A new ``/instruction`` message starts a new episode for the policy.
"""

from __future__ import annotations

import collections
import time

from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseArray
from rclpy.node import Node
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import String
from trajectory_msgs.msg import JointTrajectory

from robot_rl.paths import data_path
from robot_rl.policy.base import Observation, PolicyConfig, make_policy
from robot_rl.policy.runner import AsyncPolicyRunner
from robot_rl.policy.scheduler import ActionScheduler
from robot_rl.ros import qos
from robot_rl.ros.conversions import chunk_to_msg, diagnostics_msg, joint_state_positions, msg_to_image, msg_to_poses, to_sec
from robot_rl.ros.node_utils import declare, now_sec, run_node
from robot_rl.ros.realtime import current_fifo_priority
from robot_rl.safety.limits import load_robot_limits
from robot_rl.sim.world import OBJECT_ORDER
from robot_rl.stats import Window

DEFAULTS = {
    "realtime_priority": 0,  # SCHED_FIFO priority of this process's threads, 1-98 (0: off; applied by run_node, ros/realtime.py)
    "policy": "oracle",
    "cameras": ["front", "wrist"],
    "chunk_length": 1,
    "control_rate_hz": 10.0,
    "max_observation_age": 0.3,
    # The joint state of an observation is the one stamped closest to its frames, and no further off
    # than this: with delta actions a joint state one tick off shifts the whole chunk, and the learner,
    # which pairs frames and joints by stamp, would score an action the policy never proposed.
    "joint_sync_tolerance_s": 0.05,
    "seed": 0,
    "robot_limits_file": "",  # default: calibration/sim_arm.yaml of this package
    "instruction": "",  # initial instruction; /instruction overrides it
    "policy_path": "",  # policy 'vla': the exported policy directory (default: policies/sim_default of this package)
    "backend": "auto",  # policy 'vla': auto | torch | onnxruntime | tensorrt
    "resize_images": False,  # policy 'vla': scale frames of another size to the size the model was trained on
    # every_frame: infer on each complete set of frames and publish its chunk at once (lowest latency);
    # queue: infer on a worker thread when fewer than queue_threshold future targets are queued, and
    # publish the merged queue every control period (for models slower than the control period)
    "schedule": "every_frame",
    "queue_threshold": 2,
    "chunk_merge": "latest",  # queue: latest | ensemble (ACT temporal ensembling)
    "ensemble_decay": 0.01,
    # reinforcement learning: sample chunks from the policy's Gaussian, and take the learner's weights
    "explore": False,
    "explore_noise": "step",  # step | chunk (vla_policy.py); the learner's ppo.exploration must say the same
    "weights_address": "",  # tcp://learner:5556 (empty: no weights from a learner)
    "robot_secret_key": "",  # this robot's keys/<robot>.key_secret (robot-rl keygen)
    "learner_public_key": "",  # the learner's keys/learner.key
}


class PolicyNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__("policy", **kwargs)
        p = declare(self, DEFAULTS)
        self.p = p
        limits = load_robot_limits(p["robot_limits_file"] or data_path("calibration", "sim_arm.yaml"))
        config = PolicyConfig(type=p["policy"], chunk_length=int(p["chunk_length"]),
                              control_period=1.0 / float(p["control_rate_hz"]), seed=int(p["seed"]),
                              joint_names=limits.joint_names, lower=limits.lower.tolist(), upper=limits.upper.tolist(),
                              options={"path": p["policy_path"] or str(data_path("policies", "sim_default")),
                                       "backend": p["backend"], "resize": bool(p["resize_images"]),
                                       "explore": bool(p["explore"]), "explore_seed": int(p["seed"]),
                                       "explore_noise": p["explore_noise"]})
        self.policy = make_policy(config)
        self.cameras = list(p["cameras"])
        if not self.cameras:
            raise ValueError("policy_node parameter 'cameras' must name at least one camera")
        self.max_age = float(p["max_observation_age"])
        self.images: dict[str, Image] = {}
        self.joints: JointState | None = None
        self.joints_at = 0.0
        self.joint_history: collections.deque = collections.deque(maxlen=500)  # (stamp, msg): 1 s of a 500 Hz driver
        self.joint_tolerance = float(p["joint_sync_tolerance_s"])
        self.pending_set: tuple[float, dict] | None = None  # (stamp, image messages) waiting for joints
        self.joint_waits = 0  # frame sets that arrived before their joint state
        self.objects: PoseArray | None = None
        self.instruction: str | None = None
        self.instruction_error = ""
        self.inference_ms = Window(300)
        # Where the latency goes: frame age when the trigger frame is handled, and when its chunk leaves.
        self.receive_age_ms = Window(300)
        self.publish_age_ms = Window(300)
        self.frames = {cam: 0 for cam in self.cameras}
        self.used_stamps: dict[str, float] = {}  # per camera, the frame stamp of the last observation
        self.published_at = Window(300)
        self.chunks = 0
        self.skipped: dict[str, int] = {}
        self.last_skip = ""

        for cam in self.cameras:
            topic = f"/camera/{cam}/color/image_raw"
            self.create_subscription(Image, topic, lambda msg, cam=cam: self.on_image(cam, msg), qos.SENSOR_SUB)
        self.create_subscription(JointState, "/joint_states", self.on_joints, qos.SENSOR_SUB)
        self.create_subscription(String, "/instruction", self.on_instruction, qos.LATCHED)
        if self.policy.needs_privileged_state:
            self.create_subscription(PoseArray, "/sim/object_poses", self.on_objects, qos.SENSOR_SUB)
        self.chunk_pub = self.create_publisher(JointTrajectory, "/policy/trajectory", qos.COMMAND)
        self.status_pub = self.create_publisher(DiagnosticArray, "/policy/status", qos.STATUS)
        self.create_timer(1.0, self.publish_status)
        # In-process consumer of each chunk, called before it is published (control_node hands chunks
        # to the safety node this way; /policy/trajectory still carries them for everyone else).
        self.chunk_sink = None
        self.runner = None
        if p["schedule"] == "queue":
            scheduler = ActionScheduler(config.control_period, p["chunk_merge"], float(p["ensemble_decay"]))
            self.runner = AsyncPolicyRunner(self.policy, scheduler, int(p["queue_threshold"]), clock=lambda: now_sec(self))
            self.create_timer(config.control_period, self.on_control)
        elif p["schedule"] != "every_frame":
            raise ValueError(f"policy_node parameter 'schedule' = '{p['schedule']}': expected 'every_frame' or 'queue'")
        self.weights = None
        if p["weights_address"]:
            self.weights = self._listen_for_weights(p)
        if p["instruction"]:
            self.on_instruction(String(data=p["instruction"]))
        self.get_logger().info(f"policy '{self.policy.name}' on cameras {self.cameras}, chunk {config.chunk_length}")

    def _listen_for_weights(self, p):
        """Weights from the learner over CurveZMQ, swapped in by the policy between ticks."""
        from robot_rl.transport.links import WeightsListener
        from robot_rl.transport.security import ClientKeys

        if not hasattr(self.policy, "load_weights"):
            raise ValueError(f"policy_node: policy '{self.policy.name}' cannot take learner weights (use policy 'vla')")
        if not (p["robot_secret_key"] and p["learner_public_key"]):
            raise ValueError("policy_node: weights_address needs robot_secret_key and learner_public_key (robot-rl keygen)")
        keys = ClientKeys(p["robot_secret_key"], p["learner_public_key"])

        def swap(version: int, config: dict, blob: bytes) -> None:
            self.policy.load_weights(version, config, blob)
            self.get_logger().info(f"now running learner weights v{version}")

        return WeightsListener(p["weights_address"], keys, swap)

    def on_instruction(self, msg: String) -> None:
        try:
            (self.runner.reset if self.runner else self.policy.reset)(msg.data)
        except ValueError as exc:
            self.instruction, self.instruction_error = None, f"/instruction: {exc}"
            self.get_logger().error(f"{self.instruction_error}; the policy stays idle and the arm holds")
            return
        self.instruction, self.instruction_error = msg.data, ""
        self.get_logger().info(f"instruction: '{msg.data}'")

    def on_joints(self, msg: JointState) -> None:
        self.joints, self.joints_at = msg, now_sec(self)
        stamp = to_sec(msg.header.stamp)
        self.joint_history.append((stamp, msg))
        if self.pending_set is not None:  # a frame set was waiting for its joint state
            frames_at, image_msgs = self.pending_set
            if stamp >= frames_at - self.joint_tolerance:
                if now_sec(self) - frames_at > self.max_age:
                    self.pending_set = None
                    return self._skip("stale joints: the frames' joint state came too late")
                self._observe(frames_at, image_msgs)

    def on_objects(self, msg: PoseArray) -> None:
        self.objects = msg

    def _skip(self, reason: str) -> None:
        key = reason.split(":")[0]
        self.skipped[key] = self.skipped.get(key, 0) + 1
        self.last_skip = reason

    def on_image(self, cam: str, msg: Image) -> None:
        self.images[cam] = msg
        self.frames[cam] += 1
        # One observation per complete set: every camera has delivered a frame since the last set was
        # used, so the camera that completes it triggers (in sim, the last one published each tick)
        # and no inference runs on a frame from one camera and a stale one from another.
        stamps = {c: to_sec(m.header.stamp) for c, m in self.images.items()}
        if stamps[cam] < self.used_stamps.get(cam, -1.0):  # time went back (a sim reset under sim time)
            self.used_stamps = {}
        now = now_sec(self)
        waiting = [c for c in self.cameras if stamps.get(c, -1.0) <= self.used_stamps.get(c, -1.0)]
        if waiting:
            newest = max(stamps.values())
            for other in waiting:
                if other not in stamps or newest - stamps[other] > self.max_age:
                    return self._skip(f"stale camera: no recent frame on /camera/{other}")
            return None
        self.used_stamps = stamps
        stamp = max(stamps.values())  # the observation is complete when its newest frame exists
        self.receive_age_ms.add((now - stamp) * 1e3)
        if now - stamp > self.max_age:
            return self._skip(f"stale camera: /camera/{cam} frame is {(now - stamp) * 1e3:.0f} ms old")
        if stamp - min(stamps.values()) > self.max_age:
            oldest = min(stamps, key=stamps.get)
            return self._skip(f"stale camera: /camera/{oldest} lags the others by more than {self.max_age} s")
        if self.instruction is None:
            return self._skip("no instruction" + (f": {self.instruction_error}" if self.instruction_error else ""))
        if self.joints is None or now - self.joints_at > self.max_age:
            return self._skip("stale joints: no recent /joint_states")
        self._observe(stamp, {c: self.images[c] for c in self.cameras})

    def _observe(self, stamp: float, image_msgs: dict[str, Image]) -> None:
        """Act on a complete frame set with the joint state stamped nearest to it. When that joint
        state has not arrived yet (topics are not delivered in order), wait for it: on_joints resumes."""
        self.pending_set = None
        try:
            skew, joints = min(((abs(t - stamp), m) for t, m in self.joint_history), key=lambda x: x[0])
            if skew > self.joint_tolerance:
                if max(t for t, _ in self.joint_history) < stamp:
                    self.pending_set = (stamp, image_msgs)
                    self.joint_waits += 1
                    return None
                return self._skip(f"unsynchronised joints: the nearest /joint_states is {skew * 1e3:.0f} ms from the frames "
                                  f"(joint_sync_tolerance_s {self.joint_tolerance})")
            names, positions = joint_state_positions(joints, "/joint_states")
            images = {c: msg_to_image(image_msgs[c], f"/camera/{c}/color/image_raw") for c in self.cameras}
            objects = None
            if self.policy.needs_privileged_state:
                if self.objects is None:
                    return self._skip("no privileged state: nothing on /sim/object_poses")
                objects = msg_to_poses(self.objects, OBJECT_ORDER, "/sim/object_poses")
            obs = Observation(stamp, names, positions, self.instruction, images, objects)
            if self.runner:
                return self.runner.offer(obs)
            t0 = time.perf_counter()
            chunk = self.policy.act(obs)
            self.inference_ms.add((time.perf_counter() - t0) * 1e3)
        except ValueError as exc:
            self.get_logger().error(f"bad observation, no action: {exc}", throttle_duration_sec=1.0)
            return self._skip(f"bad input: {exc}")
        self._send(chunk)
        self.publish_age_ms.add((now_sec(self) - stamp) * 1e3)

    def on_control(self) -> None:
        chunk = self.runner.tick(now_sec(self))
        if chunk is not None:
            self._send(chunk)

    def _send(self, chunk) -> None:
        if self.chunk_sink is not None:
            self.chunk_sink(chunk)
        self.chunk_pub.publish(chunk_to_msg(chunk))
        self.chunks += 1
        self.published_at.add(time.monotonic())

    def close(self) -> None:
        if self.runner:
            self.runner.close()
        if self.weights:
            self.weights.close()

    def publish_status(self) -> None:
        times = list(self.published_at.samples)
        recent = [t for t in times if t > time.monotonic() - 5.0]
        rate = (len(recent) - 1) / (recent[-1] - recent[0]) if len(recent) > 2 else 0.0
        inference = self.runner.inference_ms if self.runner else self.inference_ms
        values = {
            "policy": self.policy.name,
            "model_version": self.policy.version,
            "policy_version": int(getattr(self.policy, "version_number", 0)), "joint_waits": self.joint_waits,
            **({"weights_received": self.weights.received, "weights_errors": self.weights.errors,
                "last_weights_error": self.weights.last_error,
                "weights_latency_ms_p50": round(self.weights.latency_ms.percentile(50), 3)} if self.weights else {}),
            "instruction": self.instruction or "",
            "inference_ms_p50": round(inference.percentile(50), 3),
            "inference_ms_p99": round(inference.percentile(99), 3),
            "schedule": self.p["schedule"],
            **({"queue_depth": self.runner.depth(now_sec(self)), "inferences": self.runner.inferences,
                "inference_errors": self.runner.errors, "last_inference_error": self.runner.last_error}
               if self.runner else {}),
            "frame_age_at_receive_ms_p50": round(self.receive_age_ms.percentile(50), 3),
            "frame_age_at_receive_ms_p99": round(self.receive_age_ms.percentile(99), 3),
            "frame_age_at_publish_ms_p50": round(self.publish_age_ms.percentile(50), 3),
            "frame_age_at_publish_ms_p99": round(self.publish_age_ms.percentile(99), 3),
            **{f"frames_{cam}": n for cam, n in self.frames.items()},
            "rate_hz": round(rate, 2),
            "chunks": self.chunks,
            "skipped": sum(self.skipped.values()),
            "last_skip": self.last_skip,
        }
        level, message = "ok", "running"
        if self.instruction_error:
            level, message = "error", self.instruction_error
        elif rate == 0.0:
            level, message = "warn", self.last_skip or "no chunks yet"
        values["sched_fifo_priority"] = current_fifo_priority()
        self.status_pub.publish(diagnostics_msg("policy", level, message, values, now_sec(self)))


def main(args=None) -> int:
    return run_node(PolicyNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
