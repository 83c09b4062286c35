"""episode_node: records RL episodes from the running graph and sends them to the learner.

Records one step per executed command (``/safety/command``) with the frames of ``/camera/<cam>/...``
(resized to the policy's resolution), ``/joint_states``, the chunk that produced it
(``/policy/trajectory``: observation stamp and weights version), the critic's reward
(``/reward/progress``) and, in simulation only, ``/sim/success`` (ground truth: reported, never a
reward). The logic is :class:`robot_rl.data.recorder.EpisodeRecorder`.

Episodes start on ``/episode/start`` or, with ``auto_start``, on each new ``/instruction``; they end on
``/episode/stop``, the critic's done, the time limit, an operator event on ``/teleop/event``
(success, failure, reset) or a new instruction. A finished episode goes into the spool on disk
first, then (``learner_address`` set) up to the learner over CurveZMQ; it leaves the spool only when
the learner acknowledges it. With ``reset_service`` set (sim: ``/sim/reset``) the node asks for a
reset after each episode, which announces the next instruction and so starts the next episode.
Publishes ``/episode/event`` (std_msgs/String ``started <id>`` / ``ended <id> <outcome> <success>``)
and ``/episode/status``.
"""

from __future__ import annotations

from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Bool, Float32MultiArray, String
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

from robot_rl.data.recorder import EpisodeRecorder, RecorderConfig
from robot_rl.paths import data_path
from robot_rl.policy.vla_policy import resize_rgb
from robot_rl.ros import qos
from robot_rl.ros.conversions import diagnostics_msg, msg_to_chunk, msg_to_image, ordered_joint_positions, to_sec
from robot_rl.ros.node_utils import declare, now_sec, run_node
from robot_rl.safety.limits import load_robot_limits
from robot_rl.sim.tasks import TASKS, UnknownTaskError, get_task
from robot_rl.transport.spool import Spool, SpoolFullError

DEFAULTS = {
    "robot": "robot1",  # recorded in each episode; the learner's per-robot counts use its key name
    # recorded in each episode (meta.extra.exploration): the policy node's explore_noise, "" when it does
    # not explore; the learner drops episodes whose noise its ppo.exploration would score wrongly
    "exploration": "step",
    "cameras": ["front", "wrist"],
    "image_width": 128,  # the policy's resolution (frames are resized to it)
    "image_height": 96,
    "robot_limits_file": "",  # joint order; default: calibration/sim_arm.yaml of this package
    "control_rate_hz": 10.0,
    "max_duration_s": 0.0,  # 0: the task's own time limit when the instruction names a known task, else 30 s
    "done_threshold": 0.5,
    "done_frames": 2,  # 0: the critic's done does not end episodes
    "auto_start": True,  # start an episode at each new /instruction
    "reset_service": "",  # called after each episode (sim: /sim/reset)
    "spool_dir": "spool",
    "spool_max_bytes": 0,  # 0: no quota (the disk's own size)
    "learner_address": "",  # tcp://learner:5555; "" keeps episodes in the spool only
    "robot_secret_key": "",
    "learner_public_key": "",
}


class EpisodeNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__("episode", **kwargs)
        p = declare(self, DEFAULTS)
        self.p = p
        limits = load_robot_limits(p["robot_limits_file"] or data_path("calibration", "sim_arm.yaml"))
        self.joint_names = list(limits.joint_names)
        self.cameras = list(p["cameras"])
        self.size = (int(p["image_height"]), int(p["image_width"]))
        self.recorder = EpisodeRecorder(RecorderConfig(
            self.cameras, self.size[1], self.size[0], self.joint_names, float(p["control_rate_hz"]),
            done_threshold=float(p["done_threshold"]), done_frames=int(p["done_frames"]), robot=p["robot"],
            exploration=p["exploration"] or None))
        self.spool = Spool(p["spool_dir"], int(p["spool_max_bytes"]) or None)
        self.uplink = None
        if p["learner_address"]:
            from robot_rl.transport.links import EpisodeUplink
            from robot_rl.transport.security import ClientKeys

            if not (p["robot_secret_key"] and p["learner_public_key"]):
                raise ValueError("episode_node: learner_address needs robot_secret_key and learner_public_key (robot-rl keygen)")
            self.uplink = EpisodeUplink(self.spool, p["learner_address"], ClientKeys(p["robot_secret_key"], p["learner_public_key"]),
                                        p["robot"]).start()
        self.instruction = ""
        self.counts = {"episodes": 0, "discarded": 0, "spool_full": 0}
        self.outcomes: dict[str, int] = {}
        self.last_error = ""
        self.reset_client = self.create_client(Trigger, p["reset_service"]) if p["reset_service"] else None
        self.reset_future = None

        for cam in self.cameras:
            self.create_subscription(Image, f"/camera/{cam}/color/image_raw",
                                     lambda msg, cam=cam: self.on_image(cam, msg), qos.SENSOR_SUB)
        self.create_subscription(JointState, "/joint_states", self.on_joints, qos.SENSOR_SUB)
        self.create_subscription(JointState, "/safety/command", self.on_executed, qos.EVENTS)
        self.create_subscription(JointTrajectory, "/policy/trajectory", self.on_trajectory, qos.EVENTS)
        self.create_subscription(Float32MultiArray, "/reward/progress", self.on_reward, qos.EVENTS)
        self.create_subscription(String, "/instruction", self.on_instruction, qos.LATCHED)
        self.create_subscription(String, "/teleop/event", self.on_teleop_event, qos.EVENTS)
        self.create_subscription(Bool, "/sim/success", self.on_sim_success, qos.COMMAND)
        self.create_service(Trigger, "/episode/start", self.on_start)
        self.create_service(Trigger, "/episode/stop", self.on_stop)
        self.event_pub = self.create_publisher(String, "/episode/event", qos.EVENTS)
        self.status_pub = self.create_publisher(DiagnosticArray, "/episode/status", qos.STATUS)
        self.create_timer(0.1, self.on_clock)
        self.create_timer(1.0, self.publish_status)
        self.get_logger().info(f"recording {self.cameras} at {self.size[1]}x{self.size[0]} into {p['spool_dir']}"
                               + (f", sending to {p['learner_address']}" if self.uplink else " (no learner)"))

    # -- inputs ------------------------------------------------------------------------------------
    def _warn(self, text: str) -> None:
        self.last_error = text
        self.get_logger().warning(text, throttle_duration_sec=2.0)

    def on_image(self, cam: str, msg: Image) -> None:
        try:
            image = msg_to_image(msg, f"/camera/{cam}/color/image_raw")
        except ValueError as exc:
            return self._warn(str(exc))
        self.recorder.on_frame(cam, to_sec(msg.header.stamp), resize_rgb(image, *self.size))

    def on_joints(self, msg: JointState) -> None:
        try:
            self.recorder.on_joints(to_sec(msg.header.stamp), ordered_joint_positions(msg, self.joint_names, "/joint_states"))
        except ValueError as exc:
            self._warn(str(exc))

    def on_trajectory(self, msg: JointTrajectory) -> None:
        try:
            self.recorder.on_chunk(msg_to_chunk(msg, "/policy/trajectory"))
        except ValueError as exc:
            self._warn(str(exc))

    def on_executed(self, msg: JointState) -> None:
        try:
            ordered = ordered_joint_positions(msg, self.joint_names, "/safety/command")
        except ValueError as exc:
            return self._warn(str(exc))
        source = msg.header.frame_id or "unknown"
        outcome = self.recorder.on_executed(ordered, source, to_sec(msg.header.stamp), now_sec(self))
        if outcome is not None:
            self.finish(outcome.reason)

    def on_reward(self, msg: Float32MultiArray) -> None:
        if len(msg.data) < 3:
            return self._warn(f"/reward/progress: expected [delta, value, done_prob], got {len(msg.data)} values")
        if self.recorder.on_reward(float(msg.data[0]), float(msg.data[2])) is not None:
            self.finish("done")

    def on_sim_success(self, msg: Bool) -> None:
        self.recorder.on_sim_success(msg.data)

    def on_instruction(self, msg: String) -> None:
        changed = msg.data != self.instruction
        self.instruction = msg.data
        if self.recorder.recording and changed:
            self.finish("instruction_changed", reset=False)
        if self.p["auto_start"] and not self.recorder.recording:
            self.begin()

    def on_teleop_event(self, msg: String) -> None:
        if msg.data not in ("success", "failure", "reset"):
            return self._warn(f"/teleop/event: unknown event '{msg.data}' (expected success, failure or reset)")
        if self.recorder.recording:
            self.finish(msg.data, success=msg.data == "success")
        elif msg.data == "reset":
            self.request_reset()

    def on_start(self, request, response):
        if self.recorder.recording:
            response.success, response.message = False, "an episode is being recorded; stop it first"
        elif not self.instruction:
            response.success, response.message = False, "no instruction yet (publish one on /instruction)"
        else:
            response.success, response.message = True, f"recording {self.begin()}"
        return response

    def on_stop(self, request, response):
        if not self.recorder.recording:
            response.success, response.message = False, "no episode is being recorded"
        else:
            response.success, response.message = True, self.finish("stopped", reset=False)
        return response

    def on_clock(self) -> None:
        if self.recorder.check_time(now_sec(self)) is not None:
            self.finish("time_limit")

    # -- episodes ----------------------------------------------------------------------------------
    def begin(self) -> str:
        try:
            task = get_task(self.instruction).name
        except UnknownTaskError:
            task = ""
        limit = float(self.p["max_duration_s"]) or (TASKS[task].max_duration_s if task else 30.0)
        self.recorder.config.max_duration_s = limit
        eid = self.recorder.start(self.instruction, task, now_sec(self))
        self.event_pub.publish(String(data=f"started {eid}"))
        return eid

    def finish(self, reason: str, success: bool | None = None, reset: bool = True, announce: bool = True) -> str:
        episode, outcome = self.recorder.stop(reason, success)
        self.outcomes[outcome.reason] = self.outcomes.get(outcome.reason, 0) + 1
        if episode is None:
            self.counts["discarded"] += 1
            text = f"episode too short, discarded ({outcome.reason})"
        else:
            try:
                self.spool.put(episode)
                self.counts["episodes"] += 1
                if self.uplink:
                    self.uplink.notify()
                text = (f"ended {episode.meta.episode_id} {outcome.reason} {int(outcome.success)} "
                        f"({len(episode)} steps)")
                if announce:
                    self.event_pub.publish(String(data=text))
            except SpoolFullError as exc:
                self.counts["spool_full"] += 1
                text = f"episode {episode.meta.episode_id} LOST: {exc}"
                self.get_logger().error(text)
        if announce:
            self.get_logger().info(text)
        if reset:
            self.request_reset()
        return text

    def request_reset(self) -> None:
        if self.reset_client is None:
            return
        if not self.reset_client.service_is_ready():
            return self._warn(f"reset service {self.p['reset_service']} is not available")
        self.reset_future = self.reset_client.call_async(Trigger.Request())

    def publish_status(self) -> None:
        uplink = self.uplink.stats() if self.uplink else {}
        values = {**self.counts, **{f"outcome_{k}": v for k, v in self.outcomes.items()},
                  "recording": self.recorder.recording, "spool_pending": len(self.spool.pending()),
                  **{f"uplink_{k}": v for k, v in uplink.items()}, "last_error": self.last_error}
        level = "error" if self.counts["spool_full"] else "ok"
        self.status_pub.publish(diagnostics_msg("episode", level, "recording" if self.recorder.recording else "idle",
                                                values, now_sec(self)))

    def close(self) -> None:
        if self.recorder.recording:
            # keep what was recorded: it goes to the spool (ROS may be shut down already: no publishing)
            print(self.finish("shutdown", reset=False, announce=False), flush=True)
        if self.uplink:
            self.uplink.close()


def main(args=None) -> int:
    return run_node(EpisodeNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
