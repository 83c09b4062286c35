"""sim_bridge_node: a simulated world behind the hardware topics.

Publishes ``/camera/<cam>/color/image_raw`` + ``camera_info``, ``/joint_states``, ``/clock`` and
(simulation only) ``/sim/object_poses``, ``/sim/success``, ``/sim/progress`` (the task's ground-truth
progress, for the simulated human's stall trigger; never a reward), ``/sim/status``; executes
``/robot/command`` (std_msgs/Float64MultiArray of joint position targets, the ros2_control forward
position controller's format); serves ``/sim/reset``. With ``return_and_explore`` it saves the world
whenever ``/teleop/engaged`` rises and resets into saved states (:mod:`robot_rl.sim.failure_states`).

The world steps on its own thread at ``control_rate_hz``, paced to the wall clock when
``real_time_factor`` is 1 (stamps are then the wall time at publication, like a camera driver that
stamps frames on arrival); any other factor runs free and stamps with simulated time, which the other
nodes follow with ``use_sim_time``.
"""

from __future__ import annotations

import queue
import threading
import time

import numpy as np
from rclpy.node import Node
from rosgraph_msgs.msg import Clock
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseArray
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import Bool, Float32, Float64MultiArray, String
from std_srvs.srv import Trigger

from robot_rl.ros import qos
from robot_rl.ros.conversions import camera_info_msg, diagnostics_msg, image_to_msg, joint_state_msg, poses_msg, to_stamp
from robot_rl.ros.node_utils import declare, run_node
from robot_rl.ros.realtime import current_fifo_priority
from robot_rl.sim.tasks import TASKS, UnknownTaskError, get_task
from robot_rl.sim.world import OBJECT_ORDER, WorldConfig, make_world
from robot_rl.stats import Window

DEFAULTS = {
    "realtime_priority": 0,  # SCHED_FIFO priority of this process's threads, 1-98 (0: off; applied by run_node, ros/realtime.py)
    "world": "tabletop",
    "cameras": ["front", "wrist"],
    "image_width": 128,
    "image_height": 96,
    "control_rate_hz": 10.0,
    "real_time_factor": 1.0,
    "seed": 0,
    "task": "cycle",  # a task name or instruction, or "cycle" through all tasks at each reset
    "announce_instruction": True,  # publish the task's instruction on /instruction at each reset
    "gym_env_id": "",  # world "gymnasium": the environment id, and its options below
    "gym_image_keys": [""],
    "gym_state_key": "",
    # after a reset, /robot/command is ignored this long: commands still in flight from the previous
    # episode would otherwise drag the reset arm back toward their targets
    "reset_settle_s": 0.15,
    # Return-and-explore (VLAC's HIL stage 2): save the world when the human takes over
    # (/teleop/engaged rises) and start a reset from a saved state with this probability.
    "return_and_explore": False,
    "return_probability": 0.5,
    "failure_states_dir": "failure_states",
    "failure_states_capacity": 50,
    "failure_state_uses": 3,
}


class SimBridgeNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__("sim_bridge", **kwargs)
        p = declare(self, DEFAULTS)
        self.p = p
        extra = {"env_id": p["gym_env_id"], "image_keys": [k for k in p["gym_image_keys"] if k],
                 "state_key": p["gym_state_key"]}
        self.config = WorldConfig(control_rate_hz=p["control_rate_hz"], cameras=list(p["cameras"]),
                                  image_width=p["image_width"], image_height=p["image_height"], extra=extra)
        # Offscreen GL contexts belong to the thread that made them, so the world is created, stepped,
        # rendered and reset only on the simulation thread; other threads hand it requests.
        self.requests: queue.Queue = queue.Queue()
        self.running = True
        self.started = False  # the loop steps only once the node is fully wired
        self.world = None
        self.world_error: BaseException | None = None
        self.world_ready = threading.Event()
        self.thread = threading.Thread(target=self.loop, name="sim_loop", daemon=True)
        self.thread.start()
        self.world_ready.wait()
        if self.world_error is not None:
            raise self.world_error
        self.cycle = p["task"] == "cycle"
        self.task_index = 0
        if not self.cycle and self.world.task_name is not None:
            self.world.set_task(get_task(p["task"]).name)
        self.seed = int(p["seed"])
        self.lock = threading.Lock()
        self.command: np.ndarray | None = None
        self.ignore_commands_until = 0.0
        self.bad_commands = 0
        self.steps = 0
        self.step_ms = Window(300)
        self.render_ms = Window(300)
        self.publish_ms = Window(300)  # stamp -> last image handed to DDS (real time only)
        self.sim_time_base = time.time()

        self.image_pubs = {c: self.create_publisher(Image, f"/camera/{c}/color/image_raw", qos.SENSOR_PUB) for c in self.world.camera_names}
        self.info_pubs = {c: self.create_publisher(CameraInfo, f"/camera/{c}/color/camera_info", qos.SENSOR_PUB) for c in self.world.camera_names}
        self.joint_pub = self.create_publisher(JointState, "/joint_states", qos.SENSOR_PUB)
        self.clock_pub = self.create_publisher(Clock, "/clock", qos.SENSOR_PUB)
        self.poses_pub = self.create_publisher(PoseArray, "/sim/object_poses", qos.SENSOR_PUB)
        self.success_pub = self.create_publisher(Bool, "/sim/success", qos.COMMAND)
        self.progress_pub = self.create_publisher(Float32, "/sim/progress", qos.SENSOR_PUB)
        self.status_pub = self.create_publisher(DiagnosticArray, "/sim/status", qos.STATUS)
        self.instruction_pub = self.create_publisher(String, "/instruction", qos.LATCHED)
        self.create_subscription(Float64MultiArray, "/robot/command", self.on_command, qos.COMMAND)
        self.create_subscription(String, "/instruction", self.on_instruction, qos.LATCHED)
        self.create_service(Trigger, "/sim/reset", self.on_reset)
        self.failure_states = None
        self.engaged = False
        if p["return_and_explore"]:
            from robot_rl.sim.failure_states import FailureStates

            self.failure_states = FailureStates(p["failure_states_dir"], int(p["failure_states_capacity"]),
                                                int(p["failure_state_uses"]), seed=int(p["seed"]))
            self.create_subscription(Bool, "/teleop/engaged", self.on_engaged, qos.COMMAND)
        self.create_timer(1.0, self.publish_status)

        self.in_sim_thread(lambda: self._reset_locked(self.seed))
        self.started = True
        self.get_logger().info(
            f"world '{p['world']}' cameras {self.world.camera_names} {p['image_width']}x{p['image_height']} "
            f"at {p['control_rate_hz']} Hz, joints {self.world.joint_names}"
        )

    # -- episode control ---------------------------------------------------------------------------
    def _reset_locked(self, seed: int) -> str:
        task = None
        if self.world.task_name is not None:
            names = list(TASKS)
            task = names[self.task_index % len(names)] if self.cycle else self.world.task_name
        self.world.reset(seed, task)
        hold = getattr(self.world, "hold_command", None)
        self.command = hold() if hold else self.world.joint_positions()
        self.ignore_commands_until = time.monotonic() + float(self.p["reset_settle_s"])
        summary = f"seed={seed} task={self.world.task_name}"
        if self.p["announce_instruction"] and self.world.task_name is not None:
            self.instruction_pub.publish(String(data=TASKS[self.world.task_name].instruction))
        return summary

    def in_sim_thread(self, fn, timeout: float = 10.0):
        """Run ``fn`` on the simulation thread between two steps and return its result."""
        done, box = threading.Event(), {}

        def call():
            try:
                box["value"] = fn()
            except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
                box["error"] = exc
            done.set()

        self.requests.put(call)
        if not done.wait(timeout):
            raise TimeoutError("simulation thread did not answer")
        if "error" in box:
            raise box["error"]
        return box.get("value")

    def on_engaged(self, msg: Bool) -> None:
        """The human just took over: where the policy stands now is worth returning to."""
        rising = msg.data and not self.engaged
        self.engaged = msg.data
        if rising:
            def save():
                with self.lock:
                    return self.failure_states.add(self.world.snapshot())

            path = self.in_sim_thread(save)
            self.get_logger().info(f"failure state saved: {path.name} ({len(self.failure_states)} in the bank)")

    def _restore_locked(self) -> str | None:
        """Return-and-explore: start from a saved failure state (with the configured probability)."""
        bank = self.failure_states
        if bank is None or bank.rng.random() >= float(self.p["return_probability"]):
            return None
        picked = bank.sample()
        if picked is None:
            return None
        name, state = picked
        self.world.restore(state)
        self.command = self.world.hold_command()
        self.ignore_commands_until = time.monotonic() + float(self.p["reset_settle_s"])
        if self.p["announce_instruction"] and self.world.task_name is not None:
            self.instruction_pub.publish(String(data=TASKS[self.world.task_name].instruction))
        return f"restored failure state {name} task={self.world.task_name}"

    def on_reset(self, request, response):
        def reset():
            with self.lock:
                restored = self._restore_locked()
                if restored:
                    return restored
                self.seed += 1
                self.task_index += 1
                return self._reset_locked(self.seed)

        response.message = self.in_sim_thread(reset)
        response.success = True
        self.get_logger().info(f"reset: {response.message}")
        return response

    def on_instruction(self, msg: String) -> None:
        if self.world.task_name is None:
            return
        try:
            task = get_task(msg.data)
        except UnknownTaskError:
            self.get_logger().warning(f"/instruction '{msg.data}' matches no simulated task: no ground-truth success for it")
            return
        if task.name != self.world.task_name:
            self.in_sim_thread(lambda: self.world.set_task(task.name))
            self.get_logger().info(f"task set to {task.name} by /instruction")

    def on_command(self, msg: Float64MultiArray) -> None:
        values = np.asarray(msg.data, dtype=np.float64)
        names = getattr(self.world, "command_names", self.world.joint_names)
        if values.shape != (len(names),) or not np.all(np.isfinite(values)):
            self.bad_commands += 1
            self.get_logger().error(
                f"/robot/command rejected: expected {len(names)} finite joint targets ordered {names}, "
                f"got {values.size} values; holding the previous command",
                throttle_duration_sec=1.0,
            )
            return
        with self.lock:
            if time.monotonic() < self.ignore_commands_until:
                return
            self.command = values

    # -- the loop --------------------------------------------------------------------------------------
    def loop(self) -> None:
        try:
            self.world = make_world(self.p["world"], self.config)
        except BaseException as exc:  # noqa: BLE001 - reported by the constructor
            self.world_error = exc
        self.world_ready.set()
        if self.world is None:
            return
        rtf = float(self.p["real_time_factor"])
        period = self.world.control_period
        next_tick = time.monotonic()
        while self.running and self.context.ok():
            while not self.requests.empty():
                self.requests.get_nowait()()
            if not self.started:
                time.sleep(0.005)
                next_tick = time.monotonic()
                continue
            if rtf > 0:
                next_tick += period / rtf
                delay = next_tick - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                elif delay < -period:  # fell behind (e.g. paused): do not try to catch up in a burst
                    next_tick = time.monotonic()
            try:
                self.tick(real_time=rtf == 1.0)
            except Exception as exc:  # noqa: BLE001 - keep the world alive, report loudly
                if not (self.running and self.context.ok()):
                    break  # shutting down: publishers are gone
                self.get_logger().error(f"simulation step failed: {exc}", throttle_duration_sec=1.0)
        self.world.close()  # on this thread: it owns the GL contexts

    def tick(self, real_time: bool) -> None:
        t0 = time.perf_counter()
        with self.lock:
            self.world.step(self.command)
            self.steps += 1
            t1 = time.perf_counter()
            images = {c: self.world.render(c) for c in self.world.camera_names}
            t2 = time.perf_counter()
            q, dq = self.world.joint_positions(), self.world.joint_velocities()
            objects = self.world.object_poses()
            success = self.world.success()
            progress = self.world.task_progress()
            sim_t = self.world.time
        # The stamp is the moment the frames exist (a camera driver's capture time); everything after
        # it counts as pipeline latency. Joints and images go out first, metadata after them.
        stamp = time.time() if real_time else self.sim_time_base + sim_t
        self.joint_pub.publish(joint_state_msg(self.world.joint_names, q, dq, stamp))
        for cam, image in images.items():
            self.image_pubs[cam].publish(image_to_msg(image, stamp, f"{cam}_color_optical_frame"))
        self.publish_ms.add((time.time() - stamp) * 1e3 if real_time else 0.0)
        self.clock_pub.publish(Clock(clock=to_stamp(stamp)))
        for cam in images:
            self.info_pubs[cam].publish(camera_info_msg(self.world.camera_model(cam), stamp, f"{cam}_color_optical_frame"))
        if objects:
            self.poses_pub.publish(poses_msg(objects, stamp, OBJECT_ORDER))
        if success is not None:
            self.success_pub.publish(Bool(data=bool(success)))
        if progress is not None:
            self.progress_pub.publish(Float32(data=float(progress)))
        self.step_ms.add((t1 - t0) * 1e3)
        self.render_ms.add((t2 - t1) * 1e3)

    def publish_status(self) -> None:
        with self.lock:
            values = {
                "seed": self.seed,
                "task": self.world.task_name,
                "success": self.world.success(),
                "sim_time": round(self.world.time, 3),
                "steps": self.steps,
                "step_ms_p99": round(self.step_ms.percentile(99), 3),
                "render_ms_p99": round(self.render_ms.percentile(99), 3),
                "publish_ms_p50": round(self.publish_ms.percentile(50), 3),
                "publish_ms_p99": round(self.publish_ms.percentile(99), 3),
                "rejected_commands": self.bad_commands,
            }
            if self.failure_states is not None:
                values.update(failure_states=len(self.failure_states), failure_states_saved=self.failure_states.saved,
                              failure_states_restored=self.failure_states.restored)
        values["sched_fifo_priority"] = current_fifo_priority()
        level = "warn" if self.bad_commands else "ok"
        self.status_pub.publish(diagnostics_msg("sim_bridge", level, f"task {values['task']}", values, time.time()))

    def close(self) -> None:
        self.running = False
        if self.thread.is_alive():
            self.thread.join(timeout=2.0)



def main(args=None) -> int:
    return run_node(SimBridgeNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
