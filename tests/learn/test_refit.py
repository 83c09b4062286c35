"""``robot-rl bench refit``: the HIL run's aggregate buffer rebuilt as the learner had it, then fitted."""

import json
import math

import pytest

from robot_rl.learn.benchmark import bench_learning, quick_config
from robot_rl.learn.refit import RefitConfig, ppo_settings, refit


def test_a_kept_hil_run_is_refitted_on_the_buffer_its_learner_had(tmp_path, tiny_export, tiny_critic):
    out = tmp_path / "runs"
    config = quick_config(policy=str(tiny_export), critic=str(tiny_critic), out_dir=str(out), tasks=["reach_cube"],
                          arms=["progress+hil"], learner={"keep_episodes": True, "ppo": {"epochs": 1, "minibatch_size": 32,
                                                                                          "demo_steps": 2}})
    (run,) = bench_learning(config, str(tmp_path / "learning.json"), quick=True, echo=lambda *_: None)["runs"]
    learner_dir = out / "progress_hil" / "seed0" / "learner"
    kept = sorted(p.name for p in (learner_dir / "episodes").iterdir())
    assert len(kept) == run["training"]["episodes"] == 6 and not (learner_dir / "inbox").exists()
    (demos,) = [p for p in out.iterdir() if p.name.startswith("demos-")]

    lines = []
    report = refit(RefitConfig(demos=str(demos), episodes=[str(learner_dir / "episodes")], policy=str(tiny_export),
                               steps=[1, 3], tasks=["reach_cube"], eval_seeds=1, threads=1,
                               learner={"ppo": {"demo_steps": 2}}),
                   str(tmp_path / "refit.json"), echo=lines.append)
    assert json.loads((tmp_path / "refit.json").read_text()) == report
    # the same rows the learner ended the run with: its demonstrations and every step the human commanded
    assert report["buffer"]["human_rows"] == run["learner"]["human_steps"] > 0
    assert report["buffer"]["rows"] == run["learner"]["demo_buffer"]
    assert report["buffer"]["rows"] == report["buffer"]["demonstration_rows"] + report["buffer"]["human_rows"]
    assert report["buffer"]["episodes"] == 6
    # evaluated before any step (the start) and after each requested count, on the same layouts
    assert [p["steps"] for p in report["points"]] == [0, 1, 3]
    assert all(set(p["per_task"]) == {"reach_cube"} and 0.0 <= p["mean"] <= 1.0 for p in report["points"])
    assert "demo_phase_nll" not in report["points"][0]
    assert all(math.isfinite(p["demo_phase_nll"]) and p["demo_phase_nll"] > 0 for p in report["points"][1:])
    assert "demo_steps" not in report["ppo"] and report["ppo"]["demo_lr"] > 0
    assert lines and "intervened steps of 6 episodes" in lines[0]


def test_bad_refit_settings_name_what_is_wrong(tmp_path):
    (tmp_path / "d").mkdir()
    with pytest.raises(ValueError, match="increasing"):
        RefitConfig(demos=str(tmp_path / "d"), episodes=[str(tmp_path / "d")], steps=[500, 200])
    with pytest.raises(FileNotFoundError, match="--episodes .*missing: no such directory"):
        RefitConfig(demos=str(tmp_path / "d"), episodes=[str(tmp_path / "missing")])
    with pytest.raises(ValueError, match="no episode directories"):
        RefitConfig(demos=str(tmp_path / "d"), episodes=[])
    # the HIL arm's demo phase, under the run's overrides
    settings = ppo_settings(RefitConfig(demos=str(tmp_path / "d"), episodes=[str(tmp_path / "d")],
                                        learner={"ppo": {"demo_human_fraction": 0.5}}))
    assert settings["demo_human_fraction"] == 0.5 and "demo_steps" not in settings
