"""``robot-rl train --sim``: the whole learning loop in simulation, headless, through the launch runner.

Writes keys (``<run_dir>/keys``: the learner's and one robot's, the robot allow-listed) and the
learner's config (``<run_dir>/learner.yaml``, from ``config/learner.yaml`` with the run's addresses,
keys and ``reward_from: episode``), then runs ``launch/train_sim_launch.yaml``: sim bridge, the VLA
policy exploring and taking published weights, safety, the simulated human, the progress critic, the
episode recorder and the learner. It follows the learner's run directory and prints each episode the
learner receives (ground-truth success, for reporting only; the learner learns from the critic's
reward) and each update, until ``episodes`` episodes have arrived, the learner has updated on all
full batches of them and (``until_version``) the policy has acted with a learnt version; then it
stops every process and writes the JSON report. A run directory with a learner checkpoint resumes.
"""

from __future__ import annotations

import json
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from robot_rl.data.episodes import list_episodes, read_meta
from robot_rl.launcher import LaunchRunner, parse_launch
from robot_rl.paths import data_path


@dataclass
class TrainSimConfig:
    episodes: int = 20
    run_dir: str = "runs/train-sim"
    task: str = "reach_cube"
    episodes_per_update: int = 4
    learner_config: str = ""  # default: config/learner.yaml of the package
    learner_set: dict = field(default_factory=dict)  # top-level learner settings to override
    launch_args: dict = field(default_factory=dict)  # extra launch arguments (name -> value)
    timeout_s: float = 3600.0
    seed: int = 0
    until_version: int = 0  # also run until an episode acted by a learner version >= this arrives


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prepare(config: TrainSimConfig) -> tuple[Path, dict[str, str]]:
    """Keys, learner config and the launch arguments of a run."""
    from robot_rl.transport.security import generate_keypair

    run = Path(config.run_dir).resolve()
    keys = run / "keys"
    for name in ("learner", "sim1"):
        if not (keys / f"{name}.key_secret").is_file():
            generate_keypair(keys, name)
    allowed = keys / "allowed_robots"
    allowed.mkdir(parents=True, exist_ok=True)
    (allowed / "sim1.key").write_bytes((keys / "sim1.key").read_bytes())
    source = Path(config.learner_config or data_path("config", "learner.yaml"))
    raw = yaml.safe_load(source.read_text()) or {}
    learner = dict(raw.get("learner", raw))
    ports = free_port(), free_port()
    learner.update({
        "run_dir": str(run / "learner"), "policy": learner.get("policy") or "policies/sim_default",
        "bind_episodes": f"tcp://127.0.0.1:{ports[0]}", "bind_weights": f"tcp://127.0.0.1:{ports[1]}",
        "secret_key": str(keys / "learner.key_secret"), "allowed_keys": str(allowed),
        "reward_from": "episode", "episodes_per_update": config.episodes_per_update, "seed": config.seed})
    for key in ("policy", "critic", "demos"):  # relative paths are the package's (config/learner.yaml's convention)
        if learner.get(key) and not Path(learner[key]).is_absolute() and not Path(learner[key]).exists():
            learner[key] = str(data_path(*Path(learner[key]).parts))
    learner.update(config.learner_set)
    hil = learner.get("hil") or {}
    learner_file = run / "learner.yaml"
    learner_file.write_text(yaml.safe_dump({"learner": learner}, sort_keys=False))
    args = {"run_dir": str(run), "learner_config": str(learner_file),
            "episodes_address": f"tcp://127.0.0.1:{ports[0]}", "weights_address": f"tcp://127.0.0.1:{ports[1]}",
            "task": config.task, "seed": str(config.seed), "policy_path": str(Path(learner["policy"]).resolve())
            if Path(learner["policy"]).is_dir() else "",
            "return_and_explore": str(bool(hil.get("return_and_explore", False))).lower(),
            # the policy explores as the learner will score it (learn/ppo.py section 9)
            "explore_noise": str((learner.get("ppo") or {}).get("exploration", "step")),
            **{k: str(v) for k, v in config.launch_args.items()}}
    return run, args


def _received(learner_dir: Path) -> list[Path]:
    found = []
    for sub in ("inbox", "episodes"):
        if (learner_dir / sub).is_dir():
            found += list_episodes(learner_dir / sub)
    # ids begin with their creation time; an episode can move from inbox/ to episodes/ between scans
    return sorted(found, key=lambda p: p.name)


def train_sim(config: TrainSimConfig, json_path: str | None = None, echo=print) -> dict:
    run, args = prepare(config)
    learner_dir = run / "learner"
    log_path = run / "graph.log"
    nodes = parse_launch(data_path("launch", "train_sim_launch.yaml"), args)
    seen: dict[str, dict] = {}
    updates: list[dict] = []
    metrics_at = 0
    start = time.monotonic()
    failure = ""
    echo(f"run {run}: {', '.join(n.name for n in nodes)}; node output in {log_path}")
    with open(log_path, "a") as log, LaunchRunner(nodes, out=log) as runner:
        learned = 0  # episodes the learner has used in updates
        full_batches = (config.episodes // config.episodes_per_update) * config.episodes_per_update
        newest_acted = -1
        while len(seen) < config.episodes or learned < full_batches or newest_acted < config.until_version:
            ended = runner.poll()
            if ended is not None:
                failure = f"'{ended}' stopped (see {log_path})"
                break
            if time.monotonic() - start > config.timeout_s:
                failure = f"timed out after {config.timeout_s:.0f} s with {len(seen)} episodes"
                break
            for path in _received(learner_dir):
                if path.name in seen:
                    continue
                meta = read_meta(path)
                x = meta.extra
                row = {"episode": len(seen) + 1, "id": meta.episode_id, "task": meta.task, "success": bool(meta.success),
                       "steps": meta.length, "outcome": x.get("outcome"), "policy_versions": x.get("policy_versions", []),
                       "intervention_rate": round(x.get("intervened_steps", 0) / max(1, meta.length), 3),
                       "t_s": round(time.monotonic() - start, 1)}
                seen[path.name] = row
                newest_acted = max([newest_acted, *row["policy_versions"]])
                recent = [r["success"] for r in list(seen.values())[-10:]]
                echo(f"episode {row['episode']:4d} {meta.task:12s} {'SUCCESS' if row['success'] else 'failure'}  "
                     f"{row['outcome']:>11s}  policy v{row['policy_versions'][-1] if row['policy_versions'] else '-'}  "
                     f"human {row['intervention_rate']:4.0%}  success(last {len(recent)}) {sum(recent) / len(recent):.2f}  "
                     f"[{row['t_s']:.0f} s]")
            metrics = learner_dir / "metrics.jsonl"
            if metrics.is_file():
                lines = metrics.read_text().splitlines()
                for line in lines[metrics_at:]:
                    u = json.loads(line)
                    updates.append(u)
                    learned = int(u.get("episodes", learned))
                    echo(f"  update {u['update']}: version {u['version']}, {u['decisions']} decisions, "
                         f"return {u['return'] if u['return'] is None else round(u['return'], 3)}, "
                         f"kl {u.get('approx_kl', 0):.4f}, update {u['update_s']:.1f} s")
                metrics_at = len(lines)
            time.sleep(1.0)
        runner.stop(timeout=10.0)
        left = runner.alive()
    episodes = sorted(seen.values(), key=lambda r: r["episode"])
    window = 10
    report = {"episodes": episodes, "updates": updates, "run_dir": str(run), "seconds": round(time.monotonic() - start, 1),
              "success_rate": sum(r["success"] for r in episodes) / max(1, len(episodes)),
              "success_over_time": [sum(r["success"] for r in episodes[max(0, i - window + 1): i + 1]) / min(window, i + 1)
                                    for i in range(len(episodes))],
              "intervention_rate": sum(r["intervention_rate"] for r in episodes) / max(1, len(episodes)),
              "failure": failure, "processes_left": left, "config": {k: v for k, v in vars(config).items()}}
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(report, indent=2))
    echo(f"{len(episodes)} episodes in {report['seconds']:.0f} s: success {report['success_rate']:.2f}, "
         f"{len(updates)} updates, human on {report['intervention_rate']:.0%} of steps" + (f"; {failure}" if failure else ""))
    return report
