"""Run ROS 2 YAML launch files without ros2launch (PyPI has no ``launch``/``launch_ros``).

Supported subset of the YAML launch format (what robot_rl's launch files use)::

    launch:
    - arg: {name: task, default: cycle, description: ...}
    - node:
        pkg: robot_rl
        exec: sim_bridge_node
        name: sim_bridge
        namespace: /robot1          # optional
        on_exit: shutdown           # optional: stop everything when this node exits
        launch-prefix: ""           # optional: prepended to the command, e.g. another environment's python
        param:
        - {from: $(find-pkg-share robot_rl)/config/sim.yaml}
        - {name: task, value: $(var task)}
        remap:
        - {from: /joint_states, to: /robot1/joint_states}
    - set_env: {name: FASTDDS_DEFAULT_PROFILES_FILE, value: ...}   # for the nodes that follow
    - executable:                   # a plain process (no ROS arguments), e.g. the learner
        cmd: robot-rl learner --config $(var learner_config)
        name: learner
        on_exit: shutdown           # optional

Substitutions: ``$(var NAME)``, ``$(env NAME [default])``, ``$(find-pkg-share PKG)``, nested
innermost first (``$(env X $(find-pkg-share robot_rl)/f.xml)``).
Each node is its own process (found on PATH, or ``python -m robot_rl.nodes.<exec>``), its output is
prefixed with ``[name]``; Ctrl-C (SIGINT), SIGTERM (``systemctl stop``, ``docker stop``), a dying
``on_exit: shutdown`` node or a node that fails stops all of them (SIGINT, then SIGTERM, then
SIGKILL), and the runner exits non-zero when any node failed.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from robot_rl.paths import load_yaml_file

_SUBST = re.compile(r"\$\(([^()]*)\)")


class LaunchError(ValueError):
    """A launch file is malformed; the message names the file and the entry."""


@dataclass
class NodeSpec:
    package: str
    executable: str
    name: str
    namespace: str = ""
    params: list[tuple[str, str]] = field(default_factory=list)  # ("file", path) or ("value", "name:=value")
    remaps: list[tuple[str, str]] = field(default_factory=list)
    on_exit_shutdown: bool = False
    env: dict[str, str] = field(default_factory=dict)  # set_env entries above this node
    argv: list[str] | None = None  # an ``executable`` entry: the command line as given, no ROS arguments
    prefix: list[str] = field(default_factory=list)  # ``launch-prefix``, split like a shell would
    # ``name`` given in the file: the process's node is renamed to it (``__node:=``). An entry without
    # one (a process holding several nodes, like control_node) keeps its nodes' own names, as in ROS 2.
    rename: bool = True

    def command(self) -> list[str]:
        if self.argv is not None:
            exe = shutil.which(self.argv[0]) or str(Path(sys.executable).parent / self.argv[0])
            if not Path(exe).exists():
                raise LaunchError(f"executable '{self.argv[0]}' of '{self.name}' not found on PATH")
            return [exe, *self.argv[1:]]
        exe = shutil.which(self.executable)
        if exe is None and Path(sys.executable).parent.joinpath(self.executable).exists():
            exe = str(Path(sys.executable).parent / self.executable)
        if exe is None and self.package == "robot_rl":
            cmd = [*self.prefix, sys.executable, "-m", f"robot_rl.nodes.{self.executable}"]
        elif exe is None:
            raise LaunchError(f"executable '{self.executable}' of package '{self.package}' not found on PATH")
        else:
            cmd = [*self.prefix, exe]
        cmd += ["--ros-args"]
        if self.rename:
            cmd += ["-r", f"__node:={self.name}"]
        if self.namespace:
            cmd += ["-r", f"__ns:={self.namespace if self.namespace.startswith('/') else '/' + self.namespace}"]
        for kind, value in self.params:
            cmd += ["--params-file", value] if kind == "file" else ["-p", value]
        for src, dst in self.remaps:
            cmd += ["-r", f"{src}:={dst}"]
        return cmd


def _find_pkg_share(package: str) -> str:
    from robot_rl.paths import share_dir

    return str(share_dir(package))


def substitute(text: str, args: dict[str, str], where: str) -> str:
    def one(match: re.Match) -> str:
        parts = match.group(1).split()
        if not parts:
            raise LaunchError(f"{where}: empty substitution $()")
        kind, rest = parts[0], parts[1:]
        if kind == "var" and len(rest) == 1:
            if rest[0] not in args:
                raise LaunchError(f"{where}: $(var {rest[0]}) names no declared launch argument (declared: {sorted(args)})")
            return args[rest[0]]
        if kind == "env" and len(rest) in (1, 2):
            value = os.environ.get(rest[0], rest[1] if len(rest) == 2 else None)
            if value is None:
                raise LaunchError(f"{where}: environment variable {rest[0]} is not set and has no default")
            return value
        if kind == "find-pkg-share" and len(rest) == 1:
            try:
                return _find_pkg_share(rest[0])
            except FileNotFoundError as exc:
                raise LaunchError(f"{where}: {exc}") from exc
        raise LaunchError(f"{where}: unsupported substitution $({match.group(1)}); supported: var, env, find-pkg-share")

    for _ in range(16):  # innermost substitutions first, so defaults may themselves be substitutions
        replaced = _SUBST.sub(one, text)
        if replaced == text:
            return replaced
        text = replaced
    raise LaunchError(f"{where}: substitutions nest too deeply")


def _scalar(value, args: dict[str, str], where: str) -> str:
    if isinstance(value, (dict, list)):
        return yaml.safe_dump(value, default_flow_style=True).strip()
    if isinstance(value, bool):
        return "true" if value else "false"
    return substitute(str(value), args, where)


def parse_launch(path: str | Path, overrides: dict[str, str] | None = None) -> list[NodeSpec]:
    """Parse a YAML launch file into node specs; every error names the file and the entry."""
    path = Path(path)
    doc = load_yaml_file(path, "launch file", LaunchError)
    if not isinstance(doc, dict) or not isinstance(doc.get("launch"), list):
        raise LaunchError(f"{path}: expected a top-level 'launch:' list")
    overrides = dict(overrides or {})
    args: dict[str, str] = {}
    nodes: list[NodeSpec] = []
    env: dict[str, str] = {}
    for i, entry in enumerate(doc["launch"]):
        where = f"{path}: launch[{i}]"
        if not isinstance(entry, dict) or len(entry) != 1:
            raise LaunchError(f"{where}: each entry must be a single 'arg:', 'set_env:' or 'node:' mapping, got {entry!r}")
        (kind, body), = entry.items()
        if not isinstance(body, dict):
            raise LaunchError(f"{where}.{kind}: expected a mapping")
        if kind == "arg":
            name = body.get("name")
            if not isinstance(name, str):
                raise LaunchError(f"{where}.arg: missing 'name'")
            if name in overrides:
                args[name] = overrides.pop(name)
            elif "default" in body:
                args[name] = _scalar(body["default"], args, f"{where}.arg.default")
            else:
                raise LaunchError(f"{path}: launch argument '{name}' has no default and was not given (use {name}:=VALUE)")
        elif kind == "node":
            if not _condition(body, args, where):
                continue
            nodes.append(_parse_node(body, args, where))
            nodes[-1].env = dict(env)
        elif kind == "executable":
            if not _condition(body, args, where):
                continue
            nodes.append(_parse_executable(body, args, where))
            nodes[-1].env = dict(env)
        elif kind == "set_env":
            if not isinstance(body.get("name"), str) or "value" not in body:
                raise LaunchError(f"{where}.set_env: expected {{name: VARIABLE, value: VALUE}}")
            env[body["name"]] = _scalar(body["value"], args, f"{where}.set_env")
        else:
            raise LaunchError(f"{where}: unsupported entry '{kind}'; this runner supports 'arg', 'set_env', 'node' and 'executable'")
    if overrides:
        raise LaunchError(f"{path}: unknown launch arguments {sorted(overrides)}; declared: {sorted(args)}")
    names = [n.namespace + "/" + n.name for n in nodes]
    if len(set(names)) != len(names):
        raise LaunchError(f"{path}: two nodes share a name: {names}")
    return nodes


def _condition(body: dict, args: dict[str, str], where: str) -> bool:
    """A node's ``if:`` / ``unless:`` (as in ROS 2 YAML launch): true, false, 1 or 0 after substitution."""
    keep = True
    for key, wanted in (("if", True), ("unless", False)):
        if key in body:
            value = _scalar(body[key], args, f"{where}.node.{key}").strip().lower()
            if value not in ("true", "false", "1", "0"):
                raise LaunchError(f"{where}.node.{key}: '{value}' is not a boolean (true, false, 1, 0)")
            keep = keep and ((value in ("true", "1")) == wanted)
    return keep


def _parse_executable(body: dict, args: dict[str, str], where: str) -> NodeSpec:
    if not isinstance(body.get("cmd"), str):
        raise LaunchError(f"{where}.executable: missing 'cmd'")
    unknown = set(body) - {"cmd", "name", "output", "on_exit", "if", "unless"}
    if unknown:
        raise LaunchError(f"{where}.executable: unsupported keys {sorted(unknown)}")
    argv = shlex.split(_scalar(body["cmd"], args, where))
    if not argv:
        raise LaunchError(f"{where}.executable: 'cmd' is empty")
    name = _scalar(body.get("name", Path(argv[0]).name), args, where)
    return NodeSpec(package="", executable=argv[0], name=name, argv=argv,
                    on_exit_shutdown=str(body.get("on_exit", "")).strip() == "shutdown")


def _parse_node(body: dict, args: dict[str, str], where: str) -> NodeSpec:
    for key in ("pkg", "exec"):
        if not isinstance(body.get(key), str):
            raise LaunchError(f"{where}.node: missing '{key}'")
    unknown = set(body) - {"pkg", "exec", "name", "namespace", "param", "remap", "output", "on_exit", "args", "if", "unless",
                           "launch-prefix"}
    if unknown:
        raise LaunchError(f"{where}.node: unsupported keys {sorted(unknown)}")
    spec = NodeSpec(
        package=_scalar(body["pkg"], args, where),
        executable=_scalar(body["exec"], args, where),
        name=_scalar(body.get("name", body["exec"]), args, where),
        namespace=_scalar(body.get("namespace", ""), args, where),
        on_exit_shutdown=str(body.get("on_exit", "")).strip() == "shutdown",
        prefix=shlex.split(_scalar(body.get("launch-prefix", ""), args, where)),
        rename="name" in body,
    )
    for j, param in enumerate(body.get("param") or []):
        pw = f"{where}.node({spec.name}).param[{j}]"
        if isinstance(param, dict) and "from" in param:
            file = _scalar(param["from"], args, pw)
            if not Path(file).is_file():
                raise LaunchError(f"{pw}: parameter file {file} does not exist")
            spec.params.append(("file", file))
        elif isinstance(param, dict) and "name" in param and "value" in param:
            value = _scalar(param["value"], args, pw)
            # -p rules are YAML: an empty value does not parse, the empty string must be spelled ''
            spec.params.append(("value", f"{param['name']}:={value if value != '' else chr(39) * 2}"))
        else:
            raise LaunchError(f"{pw}: expected {{from: FILE}} or {{name: N, value: V}}, got {param!r}")
    for j, remap in enumerate(body.get("remap") or []):
        rw = f"{where}.node({spec.name}).remap[{j}]"
        if not isinstance(remap, dict) or "from" not in remap or "to" not in remap:
            raise LaunchError(f"{rw}: expected {{from: TOPIC, to: TOPIC}}")
        spec.remaps.append((_scalar(remap["from"], args, rw), _scalar(remap["to"], args, rw)))
    return spec


class LaunchRunner:
    """Starts node processes, prefixes their output, and stops them all together."""

    def __init__(self, nodes: list[NodeSpec], env: dict[str, str] | None = None, out=None):
        self.nodes = nodes
        self.env = {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1", "RCUTILS_LOGGING_BUFFERED_STREAM": "0"}
        self.out = out or sys.stdout
        self.procs: dict[str, subprocess.Popen] = {}
        self.failed: list[str] = []
        self._threads: list[threading.Thread] = []
        self._write_lock = threading.Lock()
        self.stopping = False

    def start(self) -> "LaunchRunner":
        for node in self.nodes:
            proc = subprocess.Popen(node.command(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    env={**self.env, **node.env},
                                    start_new_session=True, text=True, bufsize=1)
            self.procs[node.name] = proc
            thread = threading.Thread(target=self._pump, args=(node.name, proc), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def _pump(self, name: str, proc: subprocess.Popen) -> None:
        for line in proc.stdout:
            with self._write_lock:
                self.out.write(f"[{name}] {line}")
                self.out.flush()

    def poll(self) -> str | None:
        """Name of a node that ended and should bring the launch down, else None."""
        for node in self.nodes:
            code = self.procs[node.name].poll()
            if code is None:
                continue
            if code != 0 and node.name not in self.failed:
                self.failed.append(node.name)
                self._say(f"node '{node.name}' exited with code {code}")
            if code != 0 or node.on_exit_shutdown:
                return node.name
        return None

    def _say(self, text: str) -> None:
        with self._write_lock:
            self.out.write(f"[launch] {text}\n")
            self.out.flush()

    def alive(self) -> list[str]:
        return [n for n, p in self.procs.items() if p.poll() is None]

    def stop(self, timeout: float = 5.0) -> None:
        self.stopping = True
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
            running = [p for p in self.procs.values() if p.poll() is None]
            if not running:
                break
            for proc in running:
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and any(p.poll() is None for p in running):
                time.sleep(0.05)
        for thread in self._threads:
            thread.join(timeout=1.0)

    @staticmethod
    def catch_stop_signals() -> None:
        """Make SIGINT and SIGTERM stop the launch (``wait`` then stops every node), whatever this
        process inherited: started from a non-interactive shell's background job (``cmd &``, CI
        scripts, nohup) SIGINT arrives *ignored*, and Python then ignores Ctrl-C too; and SIGTERM's
        default kills the launcher alone, leaving its nodes (each in its own session) running and
        holding the robot. Call from the main thread, before :meth:`start`: the nodes then start
        with the default dispositions (a caught signal is reset at exec), not inherited ignores."""
        def stop(signum, frame):
            raise KeyboardInterrupt(signal.Signals(signum).name)

        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, stop)

    def wait(self) -> int:
        """Block until Ctrl-C (or, after :meth:`catch_stop_signals`, SIGTERM) or a node brings the launch
        down; returns the exit code."""
        try:
            while True:
                ended = self.poll()
                if ended is not None:
                    self._say(f"'{ended}' ended: stopping all nodes")
                    break
                if not self.alive():
                    break
                time.sleep(0.1)
        except KeyboardInterrupt as exc:
            self._say(f"{exc.args[0] if exc.args else 'Ctrl-C'}: stopping all nodes")
        self.stop()
        return 1 if self.failed else 0

    def __enter__(self) -> "LaunchRunner":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def parse_overrides(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        if ":=" not in item:
            raise LaunchError(f"launch argument '{item}' must look like name:=value")
        key, value = item.split(":=", 1)
        out[key] = value
    return out
