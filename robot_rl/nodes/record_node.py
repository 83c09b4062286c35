"""record_node: records topics of the running graph into an MCAP ROS 2 bag (``robot-rl record``).

Subscribes *raw* (the serialised bytes, never decoded) to each topic it is told to record, or to every
topic it discovers when ``topics`` is empty (re-checked every ``discover_period_s``, so nodes started
later are recorded too), with a QoS every publisher can serve: reliable only when all publishers are,
transient-local when all are (latched ``/instruction`` arrives). The publishers' offered QoS goes into
the bag so that ``ros2 bag play`` latches what was latched. Log time is this node's clock (sim time
with ``use_sim_time``). Writing is :class:`robot_rl.data.bags.BagWriter`: a full write queue drops
and counts messages instead of blocking DDS; ``/record/status`` says how many.
"""

from __future__ import annotations

import re
import time

from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from robot_rl.data.bags import BagError, BagWriter, message_class
from robot_rl.ros import qos
from robot_rl.ros.conversions import diagnostics_msg
from robot_rl.ros.node_utils import declare, now_sec, run_node

DEFAULTS = {
    "output": "",  # the bag directory to create; "" = bags/<date>-<time>
    "topics": "",  # space- or comma-separated topic names; "" = every topic (less `exclude`)
    "exclude": r"^/rosout$|^/parameter_events$|^/record/status$",  # regular expression, when recording everything
    "discover_period_s": 1.0,
    "duration_s": 0.0,  # stop after this long (0: until Ctrl-C)
    "max_queue_mb": 512,  # written-behind bytes before messages are dropped
    "depth": 100,  # subscription history depth
}


def subscription_qos(publisher_profiles: list, depth: int) -> QoSProfile:
    """A QoS compatible with every publisher (see the module docstring)."""
    reliable = all(p.reliability == ReliabilityPolicy.RELIABLE for p in publisher_profiles)
    latched = all(p.durability == DurabilityPolicy.TRANSIENT_LOCAL for p in publisher_profiles)
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth,
                      reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE)


def rosbags_qos(profile):
    """An rclpy QoSProfile as the rosbags ``Qos`` stored in ``metadata.yaml``."""
    from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime

    def time_of(duration) -> QosTime:
        ns = duration.nanoseconds
        if ns <= 0 or ns >= 2**62:  # unset or infinite: rosbag2's marker for "infinite"
            return QosTime(sec=2147483647, nsec=4294967295)
        return QosTime(sec=ns // 10**9, nsec=ns % 10**9)

    return Qos(history=QosHistory(int(profile.history)), depth=int(profile.depth),
               reliability=QosReliability(int(profile.reliability)), durability=QosDurability(int(profile.durability)),
               deadline=time_of(profile.deadline), lifespan=time_of(profile.lifespan),
               liveliness=QosLiveliness(int(profile.liveliness)),
               liveliness_lease_duration=time_of(profile.liveliness_lease_duration),
               avoid_ros_namespace_conventions=bool(profile.avoid_ros_namespace_conventions))


class RecordNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__("record", **kwargs)
        p = declare(self, DEFAULTS)
        self.p = p
        output = p["output"] or f"bags/{time.strftime('%Y%m%d-%H%M%S')}"
        self.wanted = [t for t in re.split(r"[\s,]+", p["topics"]) if t]
        try:
            self.exclude = re.compile(p["exclude"]) if p["exclude"] else None
        except re.error as exc:
            raise ValueError(f"record: parameter 'exclude' is not a regular expression: {exc}") from exc
        self.bag = BagWriter(output, int(p["max_queue_mb"]) << 20)
        self.subs: dict[str, object] = {}
        self.skipped: dict[str, str] = {}
        self.started = time.monotonic()
        self.status_pub = self.create_publisher(DiagnosticArray, "/record/status", qos.STATUS)
        self.discover()
        self.create_timer(float(p["discover_period_s"]), self.discover)
        self.create_timer(1.0, self.publish_status)
        what = " ".join(self.wanted) if self.wanted else "every topic"
        self.get_logger().info(f"recording {what} into {self.bag.path}")

    def discover(self) -> None:
        for topic, types in self.get_topic_names_and_types():
            if topic in self.subs or topic in self.skipped:
                continue
            if self.wanted and topic not in self.wanted:
                continue
            if not self.wanted and self.exclude is not None and self.exclude.search(topic):
                continue
            publishers = self.get_publishers_info_by_topic(topic)
            if not publishers:  # only subscribers so far: nothing to record or to match QoS with yet
                continue
            if len(types) != 1:
                self._skip(topic, f"published with {len(types)} types {types}")
                continue
            try:
                cls = message_class(types[0])
                self.bag.add_topic(topic, types[0], [rosbags_qos(i.qos_profile) for i in publishers])
            except BagError as exc:
                self._skip(topic, str(exc))
                continue
            profile = subscription_qos([i.qos_profile for i in publishers], int(self.p["depth"]))
            self.subs[topic] = self.create_subscription(cls, topic, lambda data, t=topic: self.on_message(t, data),
                                                        profile, raw=True)
            self.get_logger().info(f"recording {topic} ({types[0]})")
        if self.p["duration_s"] and time.monotonic() - self.started >= self.p["duration_s"]:
            raise KeyboardInterrupt  # ends spin(); run_node closes the bag

    def _skip(self, topic: str, reason: str) -> None:
        self.skipped[topic] = reason
        self.get_logger().warning(f"not recording {topic}: {reason}")

    def on_message(self, topic: str, data: bytes) -> None:
        self.bag.write(topic, self.get_clock().now().nanoseconds, data)

    def publish_status(self) -> None:
        s = self.bag.summary()
        missing = [t for t in self.wanted if t not in self.subs and t not in self.skipped]
        if s["dropped"]:
            level, message = "warn", f"{s['dropped']} messages dropped (the disk is slower than the topics)"
        elif missing:
            level, message = "warn", f"waiting for publishers on {' '.join(missing)}"
        else:
            level, message = "ok", f"{s['messages']} messages on {len(self.subs)} topics"
        values = {"bag": s["path"], "messages": s["messages"], "dropped": s["dropped"],
                  **{f"count {t}": v["messages"] for t, v in s["topics"].items()},
                  **{f"skipped {t}": r for t, r in self.skipped.items()}}
        self.status_pub.publish(diagnostics_msg("record", level, message, values, now_sec(self)))

    def close(self) -> None:
        summary = self.bag.close()
        self.get_logger().info(f"bag {summary['path']}: {summary['messages']} messages, {summary['dropped']} dropped, "
                               f"topics {sorted(summary['topics'])}")


def main(args=None) -> int:
    return run_node(RecordNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
