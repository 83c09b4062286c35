"""Data-parallel learning with torch.distributed: two CPU processes on gloo under torchrun take the same
steps as one learner on the whole minibatches, and stay identical."""

import json
import os
import socket
import subprocess
import sys

import torch
from safetensors.torch import load_file

from robot_rl.data.episodes import write_episode
from robot_rl.learn.learner import Learner
from tests.learn.test_learner import learner_config, learner_keys, sim_episodes  # noqa: F401 - fixture


def test_two_gloo_ranks_under_torchrun_match_one_learner(tmp_path, tiny_export, tiny_critic, learner_keys):  # noqa: F811
    episodes_dir = tmp_path / "episodes"
    for e in sim_episodes(tiny_export, 3):
        write_episode(episodes_dir, e)
    updates = 2
    # one learner, the reference
    ref_config = learner_config(tmp_path / "single", tiny_export, tiny_critic, learner_keys,
                                ppo={"epochs": 2, "minibatch_size": 16, "lr": 1e-3, "target_kl": 0.0})
    single = Learner(ref_config)
    from robot_rl.data.episodes import list_episodes, read_episode

    episodes = [read_episode(p) for p in list_episodes(episodes_dir)]
    for _ in range(updates):
        single.update(episodes)
    # two ranks
    config = learner_config(tmp_path / "ddp", tiny_export, tiny_critic, learner_keys,
                            ppo={"epochs": 2, "minibatch_size": 16, "lr": 1e-3, "target_kl": 0.0})
    from dataclasses import asdict

    config_file = tmp_path / "ddp.json"
    config_file.write_text(json.dumps(asdict(config)))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "out"
    out.mkdir()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2",
           "--master-addr", "127.0.0.1", "--master-port", str(port), "-m", "tests.learn.ddp_worker",
           str(config_file), str(episodes_dir), str(out), str(updates)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rank0, rank1 = load_file(str(out / "rank0.safetensors")), load_file(str(out / "rank1.safetensors"))
    reference = single.model.state_dict()
    start = Learner(learner_config(tmp_path / "start", tiny_export, tiny_critic, learner_keys)).model.state_dict()
    floats = [k for k, v in reference.items() if v.is_floating_point()]
    for k in reference:
        assert torch.equal(rank0[k], rank1[k]), k  # the ranks never diverge
    # the same steps as one learner on whole minibatches, up to float rounding (which Adam amplifies
    # for parameters with near-zero gradients): far closer to it than the update's own size
    step = torch.cat([(reference[k] - start[k]).flatten() for k in floats]).norm()
    off = torch.cat([(rank0[k] - reference[k]).flatten() for k in floats]).norm()
    print(f"update size {step:.4f}, data-parallel vs one learner {off:.5f}")
    assert step > 1e-2 and off < 0.02 * step, (step, off)
    # only rank 0 publishes and checkpoints
    assert (tmp_path / "ddp" / "run" / "checkpoint.pt").is_file()


def test_robot_rl_learner_under_torchrun_serves_robots_from_rank_0(tmp_path, tiny_export, tiny_critic, learner_keys):  # noqa: F811
    """The real command: rank 0 takes episodes over CurveZMQ and shares each batch, rank 1 follows."""
    import yaml

    from robot_rl.transport.links import EpisodeUplink
    from robot_rl.transport.security import ClientKeys
    from robot_rl.transport.spool import Spool

    def free_port():
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    ports = free_port(), free_port()
    config = learner_config(tmp_path, tiny_export, tiny_critic, learner_keys,
                            bind_episodes=f"tcp://127.0.0.1:{ports[0]}", bind_weights=f"tcp://127.0.0.1:{ports[1]}")
    from dataclasses import asdict

    (tmp_path / "learner.yaml").write_text(yaml.safe_dump({"learner": asdict(config)}))
    proc = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr",
                             "127.0.0.1", "--master-port", str(free_port()), "-m", "robot_rl.cli", "learner", "--config",
                             str(tmp_path / "learner.yaml"), "--updates", "2", "--no-progress"],
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    spool = Spool(tmp_path / "spool")
    for e in sim_episodes(tiny_export, 4):
        spool.put(e)
    uplink = EpisodeUplink(spool, config.bind_episodes, ClientKeys(str(learner_keys / "robot1.key_secret"),
                                                                   str(learner_keys / "learner.key")), "robot1").start()
    try:
        out, _ = proc.communicate(timeout=300)
    finally:
        uplink.close()
    assert proc.returncode == 0, out[-3000:]
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["version"] for r in rows] == [1, 2]  # one metrics row per update: rank 1 records nothing
    assert (tmp_path / "run" / "weights" / "v2.safetensors").is_file() and uplink.acked == 4
