"""NodeSpinners: each node's callbacks on its own thread, messages flowing over DDS, a clean stop."""

import threading
import time

import rclpy
from std_msgs.msg import String

from robot_rl.ros import qos
from robot_rl.ros.spinning import NodeSpinners
from tests.helpers import wait_until


def test_each_node_runs_its_callbacks_on_its_own_thread_and_stops_cleanly():
    rclpy.init()
    spinners = NodeSpinners()
    talker, listener = rclpy.create_node("spin_talker"), rclpy.create_node("spin_listener")
    heard, timer_threads, listener_threads = [], set(), set()
    try:
        publisher = talker.create_publisher(String, "/spin_test", qos.EVENTS)

        def tick():
            timer_threads.add(threading.current_thread().name)
            publisher.publish(String(data="tick"))

        def on_message(msg):
            listener_threads.add(threading.current_thread().name)
            heard.append(msg.data)

        talker.create_timer(0.02, tick)
        listener.create_subscription(String, "/spin_test", on_message, qos.EVENTS)
        assert spinners.add(talker) is talker and spinners.add(listener) is listener
        wait_until(lambda: len(heard) >= 10, timeout=15, what="ten messages from one spun node to the other")
        assert timer_threads == {"spin-spin_talker"} and listener_threads == {"spin-spin_listener"}
        threads = [t for t in threading.enumerate() if t.name.startswith("spin-spin_")]
        assert len(threads) == 2
        spinners.shutdown(timeout_s=5.0)
        assert not any(t.is_alive() for t in threads)
        count = len(heard)
        time.sleep(0.3)  # the timer would have fired 15 times: no callback runs once stopped
        assert len(heard) == count
    finally:
        spinners.shutdown(timeout_s=5.0)
        talker.destroy_node()
        listener.destroy_node()
        rclpy.shutdown()
