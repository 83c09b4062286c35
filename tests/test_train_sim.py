"""``robot-rl train --sim`` end to end: every node and the learner as processes through the launch runner;
episodes go up over CurveZMQ, the learner updates on the critic's rewards, and the policy runs the
weights it publishes."""

import json

from robot_rl.cli import main


def test_train_sim_runs_the_whole_loop_and_the_policy_runs_learnt_weights(tmp_path, capsys):
    report_path = tmp_path / "train.json"
    code = main(["train", "--sim", "--episodes", "6", "--episodes-per-update", "2", "--run-dir", str(tmp_path / "run"),
                 "--json", str(report_path), "--timeout", "400", "--arg", "max_duration_s:=5.0",
                 "--until-version", "2"])
    out = capsys.readouterr().out
    report = json.loads(report_path.read_text())
    assert code == 0, (report["failure"], out[-3000:])
    assert report["processes_left"] == [] and report["failure"] == ""
    # a batch the learner cannot learn from (no policy decision in it: the human had every step, or its
    # episodes were too stale) publishes no version, so the run waits for the policy to act with
    # version 2 rather than counting updates
    assert len(report["episodes"]) >= 6 and len(report["updates"]) >= 2
    assert [u["version"] for u in report["updates"]][:2] == [1, 2]
    # versions never run backwards within the stream of episodes (each episode's newest version)
    newest = [max(e["policy_versions"]) for e in report["episodes"] if e["policy_versions"]]
    assert newest == sorted(newest)
    # weights went down the wire and the policy acted with them (versions recorded per step)
    acted = {v for e in report["episodes"] for v in e["policy_versions"]}
    assert max(acted) >= 2, report["episodes"]
    assert all(e["outcome"] in ("done", "time_limit") for e in report["episodes"])
    assert len(report["success_over_time"]) == len(report["episodes"])
    assert "update 1: version 1" in out and "episode    1" in out
    # the learner's TensorBoard scalars exist and hold the quantities
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "run" / "learner" / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    for tag in ("success", "return", "intervention_rate", "policy_loss", "value_loss", "approx_kl", "clip_fraction",
                "episodes_per_s", "steps_per_s", "publish_ms"):
        assert f"learner/{tag}" in tags, sorted(tags)


def test_the_policy_explores_and_the_recorder_labels_episodes_as_the_learner_scores_them(tmp_path):
    """The learner's ``ppo.exploration`` reaches the policy node's ``explore_noise`` and the episode
    node's ``exploration`` label through the launch file, so a chunk-noise learner never gets episodes
    it would score as step noise (learn/ppo.py section 9)."""
    import yaml

    from robot_rl.launcher import parse_launch
    from robot_rl.paths import data_path
    from robot_rl.train_sim import TrainSimConfig, prepare

    learner_yaml = tmp_path / "learner.yaml"
    learner_yaml.write_text(yaml.safe_dump({"learner": {"ppo": {"exploration": "chunk"}}}))
    for source, noise in (("", "step"), (str(learner_yaml), "chunk")):
        _, args = prepare(TrainSimConfig(run_dir=str(tmp_path / f"run-{noise}"), learner_config=source))
        assert args["explore_noise"] == noise
        nodes = {n.name: n for n in parse_launch(data_path("launch", "train_sim_launch.yaml"), args)}
        assert ("value", "explore_noise:=" + noise) in nodes["policy"].params
        assert ("value", "exploration:=" + noise) in nodes["episode"].params
