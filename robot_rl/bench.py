"""``robot-rl bench loop``: latency of the closed sim loop at camera resolution and rate.

Runs the sim graph with (by default) 640x480 RGB images from two cameras at 30 Hz and the scripted
oracle, resetting episodes so the arm keeps moving, and writes JSON with the image-stamp-to-command
latency (measured in the safety node as the command leaves it, and again at this client one DDS hop
later), the frame's age at each hop, the policy's inference time, the jitter of the command stream
and the pipeline overhead (latency minus inference) against the 5 ms goal. By default it measures two
layouts of the same graph one after the other: the policy and safety nodes as separate processes,
and composed in one ``control_node`` process. With ``--realtime-priority N`` each layout is measured
a second time with its policy and safety processes under SCHED_FIFO priority N (``ros/realtime.py``),
named ``<layout>_fifo`` in the report, against the same layout at normal priority in the same run;
the sim bridge (camera and arm) then runs under SCHED_FIFO too, 10 below (``driver_priority``), so
the frames leave it before background work and the control nodes still preempt its renderer.
``--cpu-load N`` runs N busy normal-priority processes during every measurement (each keeps a core
busy, as a learner, a renderer or a desktop sharing the robot computer would): the condition under
which real-time scheduling matters.
"""

from __future__ import annotations

import contextlib
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from robot_rl.demo import latency_stats
from robot_rl.graph import SimGraph
from robot_rl.ros.realtime import check_priority
from robot_rl.stats import summarise

GOAL_OVERHEAD_MS = 5.0
LAYOUTS = ("processes", "composed")  # in the order a run measures them


def bench_loop(json_path: str, duration: float = 30.0, width: int = 640, height: int = 480, rate_hz: float = 30.0,
               policy: str = "oracle", episode_s: float = 6.0, layouts: tuple[str, ...] = LAYOUTS,
               realtime_priority: int = 0, cpu_load: int = 0, echo=print) -> dict:
    """Measure each layout in turn, in the same run, and write one JSON.

    ``layouts``: 'processes' (the policy and safety nodes in processes of their own) and/or 'composed'
    (both in one control_node process, each chunk handed to the safety filter by a call). With both,
    the top-level numbers are the composed layout's (the lowest-latency one the package runs), each
    layout's whole report is under ``layouts`` and ``composed_vs_processes`` holds the ratios.
    ``realtime_priority`` > 0: each layout is measured again under SCHED_FIFO at that priority
    (``<layout>_fifo``; ``fifo_vs_normal`` holds the ratios per layout). ``cpu_load``: busy
    processes beside the graph while each layout is measured (0: none).
    """
    if cpu_load < 0:
        raise ValueError(f"bench loop: --cpu-load {cpu_load}: expected 0 or more busy processes")
    unknown = [layout for layout in layouts if layout not in LAYOUTS]
    if unknown or not layouts:
        raise ValueError(f"bench loop: layouts {list(layouts)}: expected one or more of {list(LAYOUTS)}")
    check_priority(realtime_priority, "bench loop: --realtime-priority")
    runs = [(layout, 0) for layout in layouts] + [(layout, realtime_priority) for layout in layouts if realtime_priority]
    reports = {layout + ("_fifo" if priority else ""):
               _measure_layout(layout, duration, width, height, rate_hz, policy, episode_s, echo, priority, cpu_load)
               for layout, priority in runs}
    report = dict(reports[list(reports)[-1]])
    if len(reports) > 1:
        report["layouts"] = reports
    if {"processes", "composed"} <= set(reports):
        before, after = reports["processes"], reports["composed"]
        report["composed_vs_processes"] = _ratios(before, after)
    if realtime_priority:
        report["fifo_vs_normal"] = {layout: _ratios(reports[layout], reports[layout + "_fifo"]) for layout in layouts}
    Path(json_path).parent.mkdir(parents=True, exist_ok=True)
    Path(json_path).write_text(json.dumps(report, indent=2))
    echo(f"-> {json_path}")
    return report


def driver_priority_for(realtime_priority: int) -> int:
    """The sim bridge's (camera and arm driver's) SCHED_FIFO priority beside control nodes at
    ``realtime_priority``: 10 below, at least 1; 0 when real-time scheduling is off."""
    return max(1, realtime_priority - 10) if realtime_priority else 0


def _ratios(before: dict, after: dict) -> dict:
    """``after`` against ``before``: latency ratios at p50 and p99, and both overheads at p99."""
    return {
        "latency_p50_ratio": round(after["latency_ms"]["p50"] / before["latency_ms"]["p50"], 3),
        "latency_p99_ratio": round(after["latency_ms"]["p99"] / before["latency_ms"]["p99"], 3),
        "overhead_p99_ms": [round(before["pipeline_overhead_ms_p99"], 3), round(after["pipeline_overhead_ms_p99"], 3)],
    }


def _measure_layout(layout: str, duration: float, width: int, height: int, rate_hz: float, policy: str,
                    episode_s: float, echo, realtime_priority: int = 0, cpu_load: int = 0) -> dict:
    name = layout + ("_fifo" if realtime_priority else "")
    driver_priority = driver_priority_for(realtime_priority)
    log_path = str(Path(tempfile.gettempdir()) / f"robot_rl_bench_loop_{name}.log")
    overrides = {"policy": policy, "control_rate_hz": str(rate_hz), "image_width": str(width), "image_height": str(height),
                 "composed": str(layout == "composed").lower(), "realtime_priority": str(realtime_priority),
                 "driver_realtime_priority": str(driver_priority)}
    echo(f"bench loop: {width}x{height} x2 cameras at {rate_hz} Hz for {duration:.0f} s, policy {policy}, "
         f"{layout}" + (f", policy and safety under SCHED_FIFO {realtime_priority}, sim bridge {driver_priority}"
                          if realtime_priority else "")
         + (f", {cpu_load} busy process(es) beside it" if cpu_load else "") + f"; node logs {log_path}")
    with open(log_path, "w") as log, SimGraph(overrides, out=log) as graph, _busy_processes(cpu_load):
        client = graph.client
        client.wait_ready(timeout=90)
        client.reset()
        time.sleep(1.0)  # let discovery and first-frame allocations settle before measuring
        with client.lock:
            client.rec.commands.clear()
            client.rec.joint_state_ages.clear()
        start = last_reset = time.monotonic()
        while time.monotonic() - start < duration:
            graph.check_alive()
            if time.monotonic() - last_reset > episode_s:
                client.reset()
                last_reset = time.monotonic()
            time.sleep(0.1)
        with client.lock:
            commands = list(client.rec.commands)
            status = dict(client.rec.status)
            hop = summarise([a * 1e3 for a in client.rec.joint_state_ages])
    stats = latency_stats(commands, 1.0 / rate_hz)
    pol, sim, safety = (status.get(f"/{node}/status", {}) for node in ("policy", "sim", "safety"))
    for node, values, asked in (("safety", safety, realtime_priority), ("policy", pol, realtime_priority),
                                ("sim bridge", sim, driver_priority)):
        running = int(float(values.get("sched_fifo_priority", "-1")))
        if running != asked:  # a refused grant must not pass as a real-time measurement
            raise RuntimeError(f"bench loop: asked for SCHED_FIFO {asked or 'off'} in the {node} node, its status says "
                               f"{running if running >= 0 else 'nothing'} (permission? see {log_path})")
    inference = {"p50": float(pol.get("inference_ms_p50", "nan")), "p99": float(pol.get("inference_ms_p99", "nan"))}
    # The definition: image stamp -> command leaving the safety node, measured there.
    latency = {**_pair(safety, "latency_ms"), "n": int(float(safety.get("latency_samples", "0")))}
    overhead_p99 = latency["p99"] - inference["p99"]
    # Frame age at each hop (p50/p99 over the nodes' last ~300 samples), to see where latency goes.
    stages = {
        "sim_published_ms": _pair(sim, "publish_ms"),
        "policy_receive_ms": _pair(pol, "frame_age_at_receive_ms"),
        "policy_publish_ms": _pair(pol, "frame_age_at_publish_ms"),
        "safety_receive_ms": _pair(safety, "chunk_age_at_receive_ms"),
        "safety_publish_ms": {"p50": latency["p50"], "p99": latency["p99"]},
        "client_receive_ms": {"p50": stats["latency_ms"]["p50"], "p99": stats["latency_ms"]["p99"]},
    }
    frames = {k[len("frames_"):]: int(v) for k, v in pol.items() if k.startswith("frames_")}
    report = {
        "benchmark": "loop",
        "image": [height, width],
        "cameras": 2,
        "rate_hz": rate_hz,
        "measured_command_rate_hz": round(1e3 / stats["period_ms"]["p50"], 2) if stats["period_ms"]["n"] else 0.0,
        "duration_s": duration,
        "policy": policy,
        "layout": layout,
        "realtime_priority": realtime_priority,
        "driver_realtime_priority": driver_priority,
        "cpu_load": cpu_load,
        "latency_ms": latency,
        "latency_at_client_ms": stats["latency_ms"],
        "inference_ms": inference,
        "stages_frame_age_ms": stages,
        # baseline from the same run: one hop of a small message (/joint_states, sim -> this client)
        "baseline_one_hop_ms": hop,
        "pipeline_overhead_in_hops_p99": round(overhead_p99 / hop["p99"], 2) if hop["n"] else None,
        "frames_received_by_policy": frames,
        "frames_published": int(float(sim.get("steps", "0"))),
        "policy_chunks": int(float(pol.get("chunks", "0"))),
        "policy_skipped": int(float(pol.get("skipped", "0"))),
        "policy_last_skip": pol.get("last_skip", ""),
        "period_ms": stats["period_ms"],
        "period_jitter_ms": stats["period_jitter_ms"],
        "pipeline_overhead_ms_p99": overhead_p99,
        "goal_overhead_ms_p99": GOAL_OVERHEAD_MS,
        "goal_met": bool(overhead_p99 < GOAL_OVERHEAD_MS),
        "sim_render_ms_p99": float(sim.get("render_ms_p99", "nan")),
        "sim_step_ms_p99": float(sim.get("step_ms_p99", "nan")),
        "machine": {"python": platform.python_version(), "processor": platform.processor() or platform.machine()},
        "notes": "latency_ms: image header stamp (taken when the frames are rendered) to the fresh policy command "
                 "leaving the safety node, measured in the safety node over the whole run; latency_at_client_ms: "
                 "the same command's arrival at the benchmark client, one DDS hop later; stages: the frame's age "
                 "at each hop (p50/p99 over each node's last 300 samples); inference from /policy/status; "
                 "baseline_one_hop_ms: /joint_states from the sim bridge to this client, which runs at normal "
                 "priority (under SCHED_FIFO it waits behind the real-time threads, so it grows)",
    }
    echo(f"{name}: latency p50 {latency['p50']:.2f} ms p99 {latency['p99']:.2f} ms; inference p99 "
         f"{inference['p99']:.2f} ms; overhead p99 {overhead_p99:.2f} ms (goal < {GOAL_OVERHEAD_MS} ms); "
         f"jitter p99 {stats['period_jitter_ms']['p99']:.2f} ms; one-hop baseline p99 {hop['p99']:.2f} ms")
    return report


@contextlib.contextmanager
def _busy_processes(count: int):
    """``count`` normal-priority processes that each keep a core busy until the block ends."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        yield procs
    finally:
        for proc in procs:
            proc.kill()
        for proc in procs:
            proc.wait(timeout=10)


def _pair(values: dict, key: str) -> dict:
    return {q: float(values.get(f"{key}_{q}", "nan")) for q in ("p50", "p99")}
