"""ROS 2 bags in and out: record a running graph to MCAP, turn a bag into episodes (ROS-free but rclpy's
serialisation).

Writing (:class:`BagWriter`, used by ``robot-rl record``): a rosbag2 directory (``metadata.yaml`` +
one ``.mcap`` file) written with the ``rosbags`` library, so ``ros2 bag info/play`` read it. Messages
arrive already serialised (CDR, from a raw subscription) and are queued to a writer thread, so a slow
disk never blocks the DDS callbacks; when the queue is full messages are dropped *and counted*. Each
topic's schema is the message definition from rosbags' ROS 2 Kilted type store, or the ``.msg`` file
of an installed interface package for types the store does not know.

Reading (:func:`bag_to_episodes`, used by ``robot-rl convert bag``): the bag's messages go, in the
order they were received (log time), through the same :class:`~robot_rl.data.recorder.EpisodeRecorder`
that ``episode_node`` runs live. The recorder only ever sees messages received before the one it is
processing, so each step's observation is an **as-of** sample: the newest frame and joint state that
had *arrived* when the command was executed, never a later one, even when a later message carries an
earlier header stamp. Policy decisions take the frames stamped with the chunk's observation time,
as live. Episode boundaries are the ``/episode/event`` messages of ``episode_node`` (``started`` /
``ended``); a bag without them is one episode from its first to its last command.

Every error names the bag and what is wrong: a missing or truncated file, a topic that is not in the
bag (with the topics that are), a message that does not decode.
"""

from __future__ import annotations

import importlib
import os
import queue
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path


from robot_rl.data.episodes import Episode, write_episode
from robot_rl.data.recorder import EpisodeRecorder, RecorderConfig

EVENT_TOPIC = "/episode/event"
COMMAND_TOPIC = "/safety/command"
JOINTS_TOPIC = "/joint_states"
TRAJECTORY_TOPIC = "/policy/trajectory"
REWARD_TOPIC = "/reward/progress"
INSTRUCTION_TOPIC = "/instruction"
CAMERA_SUFFIX = "/color/image_raw"


class BagError(ValueError):
    """A bag cannot be written or read; the message names the bag and what is wrong."""


def camera_topic(camera: str) -> str:
    return f"/camera/{camera}{CAMERA_SUFFIX}"


# -- writing ---------------------------------------------------------------------------------------
def _typestore():
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS2_KILTED)


def _interface_file(msgtype: str) -> Path | None:
    """The ``.msg`` file of ``pkg/msg/Name`` in an installed interface package (ament prefixes)."""
    pkg, _, name = msgtype.split("/")
    prefixes = [p for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    prefixes.append(sys.prefix)
    for prefix in prefixes:
        path = Path(prefix) / "share" / pkg / "msg" / f"{name}.msg"
        if path.is_file():
            return path
    return None


def register_msgtype(store, msgtype: str) -> None:
    """Make ``store`` know ``msgtype`` (and what it nests), from installed ``.msg`` files if needed."""
    from rosbags.typesys import get_types_from_msg

    pending = [msgtype]
    while pending:
        name = pending.pop()
        if name in store.fielddefs:
            continue
        path = _interface_file(name)
        if path is None:
            raise BagError(f"message type {name}: not in the ROS 2 type store and no {name.split('/')[-1]}.msg "
                           f"found under share/{name.split('/')[0]}/msg of an installed prefix")
        types = get_types_from_msg(path.read_text(), name)
        missing = {ref for fields in types.values() for ref in _referenced(fields) if ref not in store.fielddefs}
        pending.extend(sorted(missing - set(types)))
        store.register(types)


def _referenced(fields) -> list[str]:
    refs = []
    for _, (_, spec) in fields[1]:
        inner = spec[0] if isinstance(spec, tuple) and spec and isinstance(spec[0], tuple) else spec
        if isinstance(inner, tuple) and len(inner) == 2 and isinstance(inner[0], str) and "/" in inner[0]:
            refs.append(inner[0])
    return refs


@dataclass
class TopicStats:
    msgtype: str
    messages: int = 0
    bytes: int = 0
    dropped: int = 0


class BagWriter:
    """An MCAP rosbag2 bag written on a thread; :meth:`write` never blocks (it drops and counts instead).

    >>> with BagWriter("run1") as bag:
    ...     bag.add_topic("/joint_states", "sensor_msgs/msg/JointState")
    ...     bag.write("/joint_states", time.time_ns(), cdr_bytes)
    """

    def __init__(self, path: str | Path, max_queue_bytes: int = 512 << 20):
        from rosbags.rosbag2 import StoragePlugin, Writer, WriterError

        self.path = Path(path)
        if self.path.exists():
            raise BagError(f"{self.path}: already exists (a bag is a new directory; choose another name)")
        self.store = _typestore()
        try:
            self.writer = Writer(self.path, version=9, storage_plugin=StoragePlugin.MCAP)
            self.writer.open()
        except (WriterError, OSError) as exc:
            raise BagError(f"{self.path}: cannot create the bag: {exc}") from exc
        self.connections: dict[str, object] = {}
        self.topics: dict[str, TopicStats] = {}
        self.max_queue_bytes = max_queue_bytes
        self.queued_bytes = 0
        self.queue: queue.Queue = queue.Queue()
        self.lock = threading.Lock()
        self.error: Exception | None = None
        self.closed = False
        self.thread = threading.Thread(target=self._drain, name="bag-writer", daemon=True)
        self.thread.start()

    def add_topic(self, topic: str, msgtype: str, offered_qos: list | None = None) -> None:
        """Add a topic (``msgtype`` like ``sensor_msgs/msg/Image``); ``offered_qos``: rosbags ``Qos`` of its
        publishers, stored so that ``ros2 bag play`` offers the same (latched topics stay latched)."""
        if topic in self.topics:
            return
        register_msgtype(self.store, msgtype)
        self.topics[topic] = TopicStats(msgtype)
        self.queue.put(("topic", topic, msgtype, list(offered_qos or [])))

    def write(self, topic: str, log_time_ns: int, data: bytes) -> bool:
        """Queue one serialised message; False (and counted) when the queue is full or the topic unknown."""
        stats = self.topics.get(topic)
        if stats is None or self.closed:
            return False
        with self.lock:
            if self.queued_bytes + len(data) > self.max_queue_bytes:
                stats.dropped += 1
                return False
            self.queued_bytes += len(data)
        stats.messages += 1
        stats.bytes += len(data)
        self.queue.put(("msg", topic, int(log_time_ns), data))
        return True

    def _drain(self) -> None:
        while True:
            item = self.queue.get()
            if item is None:
                return
            try:
                if item[0] == "topic":
                    _, topic, msgtype, qos = item
                    self.connections[topic] = self.writer.add_connection(topic, msgtype, typestore=self.store,
                                                                         offered_qos_profiles=qos)
                else:
                    _, topic, stamp, data = item
                    with self.lock:
                        self.queued_bytes -= len(data)
                    if self.error is None:
                        self.writer.write(self.connections[topic], stamp, data)
            except Exception as exc:  # a full disk: keep draining so write() never blocks, report at close
                self.error = self.error or exc

    def summary(self) -> dict:
        return {"path": str(self.path), "topics": {t: vars(s) for t, s in self.topics.items()},
                "messages": sum(s.messages for s in self.topics.values()),
                "dropped": sum(s.dropped for s in self.topics.values())}

    def close(self) -> dict:
        """Flush the queue and finish the bag (MCAP footer and ``metadata.yaml``); returns :meth:`summary`."""
        if not self.closed:
            self.closed = True
            self.queue.put(None)
            self.thread.join()
            try:
                self.writer.close()
            except Exception as exc:
                self.error = self.error or exc
        if self.error is not None:
            raise BagError(f"{self.path}: writing failed: {self.error}") from self.error
        return self.summary()

    def __enter__(self) -> "BagWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# -- reading ---------------------------------------------------------------------------------------
def message_class(msgtype: str):
    """The rclpy message class of ``pkg/msg/Name``."""
    pkg, kind, name = msgtype.split("/")
    try:
        return getattr(importlib.import_module(f"{pkg}.{kind}"), name)
    except (ImportError, AttributeError) as exc:
        raise BagError(f"message type {msgtype}: no Python interface installed ({exc})") from exc


class BagReader:
    """A bag opened for reading: topics, counts and messages in log-time order, decoded by rclpy."""

    def __init__(self, path: str | Path):
        from rosbags.highlevel import AnyReader, AnyReaderError
        from rosbags.rosbag2 import ReaderError

        self.path = Path(path)
        if not self.path.exists():
            raise BagError(f"{self.path}: no such bag")
        self._errors = (AnyReaderError, ReaderError, ValueError, KeyError, IndexError, OSError, EOFError)
        try:
            self.reader = AnyReader([self.path], default_typestore=_typestore())
            self.reader.open()
        except self._errors as exc:
            raise BagError(f"{self.path}: not a readable ROS 2 bag: {exc}") from exc
        self.topics = {c.topic: c.msgtype for c in self.reader.connections}
        self.counts = {t: sum(c.msgcount for c in self.reader.connections if c.topic == t) for t in self.topics}

    def require(self, topic: str, what: str) -> None:
        if topic not in self.topics:
            raise BagError(f"{self.path}: no topic {topic} ({what}); the bag has {sorted(self.topics)}")

    def messages(self, topics: list[str]):
        """(topic, log time in seconds, rclpy message), oldest first."""
        from rclpy.serialization import deserialize_message

        connections = [c for c in self.reader.connections if c.topic in topics]
        classes = {c.topic: message_class(c.msgtype) for c in connections}
        try:
            for connection, stamp, data in self.reader.messages(connections=connections):
                try:
                    msg = deserialize_message(bytes(data), classes[connection.topic])
                except Exception as exc:
                    raise BagError(f"{self.path}: a {connection.msgtype} message on {connection.topic} at log time "
                                   f"{stamp * 1e-9:.6f} s does not decode: {exc}") from exc
                yield connection.topic, stamp * 1e-9, msg
        except self._errors as exc:
            raise BagError(f"{self.path}: the bag is damaged or truncated: {exc}") from exc

    def close(self) -> None:
        self.reader.close()

    def __enter__(self) -> "BagReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@dataclass
class BagConversion:
    """Which topics of a bag are an episode's parts (defaults: the topic contract)."""

    cameras: list[str] = field(default_factory=list)  # empty: every /camera/<name>/color/image_raw in the bag
    joint_names: list[str] = field(default_factory=list)  # empty: the order of the first command message
    image_width: int = 0  # 0: the recorded size (frames of another size are resized)
    image_height: int = 0
    control_rate_hz: float = 10.0
    command_topic: str = COMMAND_TOPIC  # the step clock: one step per executed command
    command_source: str = ""  # "": the command's header.frame_id (policy, teleop, hold); else this for all
    joints_topic: str = JOINTS_TOPIC
    trajectory_topic: str = TRAJECTORY_TOPIC
    reward_topic: str = REWARD_TOPIC
    instruction_topic: str = INSTRUCTION_TOPIC
    event_topic: str = EVENT_TOPIC
    instruction: str = ""  # when the bag has no instruction message
    task: str = ""
    min_steps: int = 2


def bag_to_episodes(bag_path: str | Path, out_dir: str | Path | None, conversion: BagConversion | None = None,
                    log=print) -> list[Episode]:
    """Turn a bag into episodes (written under ``out_dir`` when given); see the module docstring."""
    from robot_rl.policy.vla_policy import resize_rgb
    from robot_rl.ros.conversions import msg_to_chunk, msg_to_image, ordered_joint_positions, to_sec

    c = conversion or BagConversion()
    with BagReader(bag_path) as bag:
        cameras = list(c.cameras) or sorted(t[len("/camera/"):-len(CAMERA_SUFFIX)] for t in bag.topics
                                            if t.startswith("/camera/") and t.endswith(CAMERA_SUFFIX))
        if not cameras:
            raise BagError(f"{bag.path}: no camera topics /camera/<name>{CAMERA_SUFFIX}; the bag has {sorted(bag.topics)}")
        for cam in cameras:
            bag.require(camera_topic(cam), f"camera '{cam}'")
        bag.require(c.joints_topic, "measured joints")
        bag.require(c.command_topic, "executed commands: the step clock")
        if not bag.counts[c.command_topic]:
            raise BagError(f"{bag.path}: no messages on {c.command_topic} (executed commands: the step clock)")
        size = (c.image_height, c.image_width)
        joint_names = list(c.joint_names)
        if not size[0] or not joint_names:
            firsts = {}
            for topic, _, msg in bag.messages([camera_topic(cameras[0]), c.command_topic]):
                firsts.setdefault(topic, msg)
                if len(firsts) == 2:
                    break
            if not size[0]:
                size = (firsts[camera_topic(cameras[0])].height, firsts[camera_topic(cameras[0])].width)
            joint_names = joint_names or list(firsts[c.command_topic].name)
            if not joint_names:
                raise BagError(f"{bag.path}: {c.command_topic} messages name no joints; pass joint_names")
        recorder = EpisodeRecorder(RecorderConfig(cameras, size[1], size[0], joint_names, c.control_rate_hz,
                                                  max_duration_s=float("inf"), done_frames=0, min_steps=c.min_steps,
                                                  history=256, robot="bag"))
        has_events = bag.counts.get(c.event_topic, 0) > 0
        instruction, episodes = c.instruction, []
        bag_id, seen_event, started_in_bag = "", False, False

        def finish(reason: str, success: bool | None, now: float) -> None:
            nonlocal bag_id
            episode, outcome = recorder.stop(reason, success)
            if episode is None:
                log(f"{bag.path}: episode ending at {now:.3f} s ({reason}) is shorter than {c.min_steps} steps, skipped")
                return
            flags = episode.intervention
            episode.meta.source = "teleop" if flags.all() else "mixed" if flags.any() else "policy"
            episode.meta.extra.update({"bag": str(bag.path), "bag_episode_id": bag_id, "recorded_success": success,
                                       "alignment": "as-of log time", "started_in_bag": started_in_bag})
            if out_dir is not None:
                write_episode(out_dir, episode)
            episodes.append(episode)
            bag_id = ""

        topics = [camera_topic(cam) for cam in cameras] + [c.joints_topic, c.command_topic, c.trajectory_topic,
                                                            c.reward_topic, c.instruction_topic, c.event_topic]
        now = 0.0
        for topic, now, msg in bag.messages([t for t in topics if t in bag.topics]):
            try:
                if topic == c.command_topic:
                    # without events the bag is one episode; with them, commands before the first event
                    # belong to an episode that started before the recording did (kept, marked partial)
                    if not recorder.recording and not seen_event:
                        recorder.start(instruction, c.task, now)
                        started_in_bag = not has_events
                    positions = ordered_joint_positions(msg, joint_names, topic)
                    recorder.on_executed(positions, c.command_source or msg.header.frame_id or "unknown",
                                         to_sec(msg.header.stamp), now)
                elif topic == c.joints_topic:
                    recorder.on_joints(to_sec(msg.header.stamp), ordered_joint_positions(msg, joint_names, topic))
                elif topic == c.trajectory_topic:
                    recorder.on_chunk(msg_to_chunk(msg, topic))
                elif topic == c.reward_topic:
                    if len(msg.data) >= 3:
                        recorder.on_reward(float(msg.data[0]), float(msg.data[2]))
                elif topic == c.instruction_topic:
                    instruction = msg.data
                elif topic == c.event_topic:
                    seen_event = True
                    words = msg.data.split()
                    if words[:1] == ["started"]:
                        if recorder.recording:
                            finish("restarted", None, now)
                        recorder.start(instruction, c.task, now)
                        started_in_bag = True
                    elif words[:1] == ["ended"] and recorder.recording:
                        bag_id = words[1] if len(words) > 1 else ""
                        finish(words[2] if len(words) > 2 else "ended", words[3:4] == ["1"], now)
                else:
                    image = msg_to_image(msg, topic)
                    if image.shape[:2] != size:
                        image = resize_rgb(image, *size)
                    recorder.on_frame(topic[len("/camera/"):-len(CAMERA_SUFFIX)], to_sec(msg.header.stamp), image)
            except ValueError as exc:
                if isinstance(exc, BagError):
                    raise
                raise BagError(f"{bag.path}: {topic} at log time {now:.6f} s: {exc}") from exc
        if recorder.recording:
            finish("end_of_bag", None, now)
    return episodes

