import os
from pathlib import Path
import subprocess
import sys
import textwrap
import time

import pytest

from robot_rl.launcher import LaunchError, LaunchRunner, parse_launch
from robot_rl.paths import data_path


def test_sim_launch_parses_with_overrides():
    nodes = parse_launch(data_path("launch", "sim_launch.yaml"), {"policy": "random", "control_rate_hz": "30"})
    assert [n.name for n in nodes] == ["sim_bridge", "policy", "safety"]
    policy = nodes[1]
    assert ("value", "policy:=random") in policy.params
    assert ("value", "control_rate_hz:=30") in policy.params
    assert any(kind == "file" and value.endswith("config/policy.yaml") for kind, value in policy.params)
    cmd = policy.command()
    assert "--ros-args" in cmd and "__node:=policy" in cmd


def test_composed_layout_runs_policy_and_safety_in_one_control_node_process():
    nodes = parse_launch(data_path("launch", "sim_launch.yaml"), {"composed": "true", "policy": "vla"})
    assert [n.executable for n in nodes] == ["sim_bridge_node", "control_node"]
    control = nodes[1]
    files = [Path(value).name for kind, value in control.params if kind == "file"]
    assert files == ["policy.yaml", "safety.yaml"]  # each file's top-level key is its node's name
    assert ("value", "policy:=vla") in control.params
    cmd = control.command()
    # no __node remap: it would give both nodes of the process one name
    assert "--ros-args" in cmd and not any(arg.startswith("__node:=") for arg in cmd)
    assert control.on_exit_shutdown


def test_node_conditions_add_the_reward_node_only_when_asked():
    nodes = parse_launch(data_path("launch", "sim_launch.yaml"), {"reward": "true", "critic": "tcp://gpu-box:5557"})
    assert [n.name for n in nodes] == ["sim_bridge", "policy", "safety", "reward"]
    assert ("value", "critic:=tcp://gpu-box:5557") in nodes[3].params
    with pytest.raises(LaunchError, match="'maybe' is not a boolean"):
        parse_launch(data_path("launch", "sim_launch.yaml"), {"reward": "maybe"})


@pytest.mark.parametrize("text, message", [
    ("launch: [", "not valid YAML"),
    ("nodes: []", "expected a top-level 'launch:' list"),
    ("launch:\n- group: {}\n", "unsupported entry 'group'"),
    ("launch:\n- node: {pkg: robot_rl}\n", "missing 'exec'"),
    ("launch:\n- node: {pkg: robot_rl, exec: x, param: [{name: a, value: $(var nope)}]}\n", r"\$\(var nope\) names no declared"),
    ("launch:\n- node: {pkg: robot_rl, exec: x, param: [{name: a, value: $(shell ls)}]}\n", "unsupported substitution"),
    ("launch:\n- node: {pkg: robot_rl, exec: x, param: [{from: /no/such.yaml}]}\n", "/no/such.yaml does not exist"),
    ("launch:\n- arg: {name: a}\n", "launch argument 'a' has no default"),
])
def test_malformed_launch_files_name_file_and_entry(tmp_path, text, message):
    path = tmp_path / "bad_launch.yaml"
    path.write_text(text)
    with pytest.raises(LaunchError, match=message) as info:
        parse_launch(path)
    assert str(path) in str(info.value)


def test_unknown_launch_argument_is_refused():
    with pytest.raises(LaunchError, match=r"unknown launch arguments \['colour'\]"):
        parse_launch(data_path("launch", "sim_launch.yaml"), {"colour": "red"})


def test_cli_launch_of_malformed_file_exits_non_zero(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("launch:\n- node: {exec: x}\n")
    proc = subprocess.run([sys.executable, "-m", "robot_rl.cli", "launch", str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "broken.yaml" in proc.stderr and "missing 'pkg'" in proc.stderr


def _script(tmp_path, name, body):
    path = tmp_path / name
    path.write_text(f"#!{sys.executable}\n" + textwrap.dedent(body))
    path.chmod(0o755)
    return path


def test_runner_prefixes_output_and_stops_everything_when_a_required_node_dies(tmp_path, capfd):
    _script(tmp_path, "sleeper", """
        import signal, sys, time
        print("sleeper up", flush=True)
        time.sleep(120)
    """)
    _script(tmp_path, "crasher", """
        import sys, time
        time.sleep(1.0)
        print("crashing", flush=True)
        sys.exit(3)
    """)
    launch = tmp_path / "l.yaml"
    launch.write_text("launch:\n- node: {pkg: demo, exec: sleeper, name: a}\n- node: {pkg: demo, exec: crasher, name: b, on_exit: shutdown}\n")
    os.environ["PATH"] = f"{tmp_path}:{os.environ['PATH']}"
    runner = LaunchRunner(parse_launch(launch))
    runner.start()
    started = time.monotonic()
    code = runner.wait()
    assert code == 1 and runner.failed == ["b"]
    assert runner.alive() == [] and time.monotonic() - started < 20
    out = capfd.readouterr().out
    assert "[a] sleeper up" in out and "[b] crashing" in out and "exited with code 3" in out


def test_set_env_reaches_the_nodes_after_it_and_substitutions_nest(tmp_path, capfd, monkeypatch):
    _script(tmp_path, "printenv_node", """
        import os
        print("VALUE=" + os.environ.get("ROBOT_RL_TEST_VALUE", "<unset>"), flush=True)
    """)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    monkeypatch.delenv("ROBOT_RL_TEST_OUTER", raising=False)
    launch = tmp_path / "env.yaml"
    launch.write_text(textwrap.dedent("""\
        launch:
        - node: {pkg: demo, exec: printenv_node, name: before}
        - set_env: {name: ROBOT_RL_TEST_VALUE, value: "$(env ROBOT_RL_TEST_OUTER $(find-pkg-share robot_rl)/x)"}
        - node: {pkg: demo, exec: printenv_node, name: after}
    """))
    nodes = parse_launch(launch)
    assert nodes[0].env == {} and nodes[1].env["ROBOT_RL_TEST_VALUE"] == str(data_path("x"))
    assert LaunchRunner(nodes).start().wait() == 0
    out = capfd.readouterr().out
    assert "[before] VALUE=<unset>" in out and f"[after] VALUE={data_path('x')}" in out


def test_sim_launch_uses_the_large_data_dds_profile_unless_one_is_set(monkeypatch):
    monkeypatch.delenv("FASTDDS_DEFAULT_PROFILES_FILE", raising=False)
    monkeypatch.delenv("FASTRTPS_DEFAULT_PROFILES_FILE", raising=False)
    profile = parse_launch(data_path("launch", "sim_launch.yaml"))[0].env["FASTDDS_DEFAULT_PROFILES_FILE"]
    assert profile == str(data_path("config", "fastdds_large_data.xml"))
    assert "<segment_size>" in open(profile).read()
    monkeypatch.setenv("FASTRTPS_DEFAULT_PROFILES_FILE", "/site/profile.xml")
    assert parse_launch(data_path("launch", "sim_launch.yaml"))[0].env["FASTDDS_DEFAULT_PROFILES_FILE"] == "/site/profile.xml"


def test_set_env_without_value_is_refused(tmp_path):
    path = tmp_path / "bad_env.yaml"
    path.write_text("launch:\n- set_env: {name: X}\n")
    with pytest.raises(LaunchError, match=r"set_env: expected \{name: VARIABLE, value: VALUE\}"):
        parse_launch(path)


def test_robot_launch_wires_cameras_driver_and_learning_nodes_from_configs():
    nodes = parse_launch(data_path("launch", "robot_launch.yaml"), {
        "robot_config": str(data_path("config", "robot_ros2_control.yaml")), "wrist_camera": "true",
        "camera_serial": "817612070101", "record": "true", "reward": "true"})
    assert [n.name for n in nodes] == ["camera_front", "camera_wrist", "robot_driver", "policy", "safety", "teleop",
                                       "reward", "episode"]
    driver = nodes[2]
    assert any(kind == "file" and value.endswith("config/robot_ros2_control.yaml") for kind, value in driver.params)
    assert ("value", "serial:=817612070101") in nodes[0].params
    limits = [value for node in nodes for kind, value in node.params if value.startswith("robot_limits_file:=")]
    assert len(limits) == 4 and all(v.endswith("calibration/so101.yaml") for v in limits)
    assert [n.name for n in parse_launch(data_path("launch", "robot_launch.yaml"))] == [
        "camera_front", "robot_driver", "policy", "safety", "teleop"]
    composed = parse_launch(data_path("launch", "robot_launch.yaml"), {"composed": "true"})
    assert [n.executable for n in composed] == ["camera_node", "robot_driver_node", "control_node", "teleop_node"]


def test_a_launch_prefix_runs_a_node_through_another_interpreter(tmp_path, capfd, monkeypatch):
    """How a pip set-up runs a LeRobot arm's driver with lerobot's environment: launch-prefix, as in ROS."""
    _script(tmp_path, "which_python", """
        import sys
        print("RUN BY " + sys.executable + " ARGS " + " ".join(sys.argv[1:3]), flush=True)
    """)
    wrapper = _script(tmp_path, "other_python", f"""
        import os, sys
        os.environ["WRAPPED"] = "1"
        os.execv({sys.executable!r}, [{sys.executable!r}, "-c",
                 "import os, runpy, sys; sys.argv = sys.argv[1:]; print('WRAPPED=' + os.environ['WRAPPED'], flush=True); "
                 "runpy.run_path(sys.argv[0], run_name='__main__')", *sys.argv[1:]])
    """)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    launch = tmp_path / "prefix.yaml"
    launch.write_text(textwrap.dedent("""\
        launch:
        - arg: {name: driver_prefix, default: ""}
        - node: {pkg: demo, exec: which_python, name: plain, launch-prefix: "$(var driver_prefix)"}
    """))
    plain = parse_launch(launch)[0]
    assert plain.prefix == [] and plain.command()[0] == str(tmp_path / "which_python")
    prefixed = parse_launch(launch, {"driver_prefix": f"{wrapper} "})[0]
    assert prefixed.command()[:2] == [str(wrapper), str(tmp_path / "which_python")]
    assert LaunchRunner([prefixed]).start().wait() == 0
    out = capfd.readouterr().out
    assert "[plain] WRAPPED=1" in out and "ARGS --ros-args -r" in out
    robot = parse_launch(data_path("launch", "robot_launch.yaml"), {"driver_prefix": ".venv-lerobot/bin/python"})
    assert [n.prefix for n in robot if n.name == "robot_driver"] == [[".venv-lerobot/bin/python"]]
    assert all(n.prefix == [] for n in robot if n.name != "robot_driver")


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_launch_stops_its_nodes_on_sigint_or_sigterm_even_when_started_with_sigint_ignored(tmp_path, sig):
    """A background job of a non-interactive shell (CI, nohup, ``cmd &``) inherits SIGINT ignored;
    ``systemctl stop`` and ``docker stop`` send SIGTERM. Either way every node must be stopped."""
    import signal

    pid_file = tmp_path / "node.pid"
    _script(tmp_path, "long_node", f"""
        import os, signal, sys, time
        open({str(pid_file)!r}, "w").write(str(os.getpid()))
        print("node up, SIGINT " + ("ignored" if signal.getsignal(signal.SIGINT) == signal.SIG_IGN else "handled"), flush=True)
        try:
            time.sleep(120)
        except KeyboardInterrupt:
            print("node stopping on SIGINT", flush=True)
    """)
    launch = tmp_path / "l.yaml"
    launch.write_text("launch:\n- node: {pkg: demo, exec: long_node, name: n}\n")
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}"}
    process = subprocess.Popen([sys.executable, "-m", "robot_rl.cli", "launch", str(launch)], env=env, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    deadline = time.monotonic() + 60
    while not pid_file.is_file() or not pid_file.read_text():
        assert time.monotonic() < deadline and process.poll() is None, "the node did not start"
        time.sleep(0.05)
    time.sleep(0.3)
    process.send_signal(getattr(signal, sig))
    try:
        out, _ = process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        out, _ = process.communicate()
        os.kill(int(pid_file.read_text()), signal.SIGKILL)
        pytest.fail(f"robot-rl launch ignored {sig}:\n{out}")
    node_pid = int(pid_file.read_text())
    with pytest.raises(ProcessLookupError):  # the node is gone too, not orphaned
        os.kill(node_pid, 0)
    assert process.returncode == 0, out
    assert "[n] node up, SIGINT handled" in out  # the node started with the default, not the inherited ignore
    assert f"[launch] {sig}: stopping all nodes" in out and "[n] node stopping on SIGINT" in out, out
