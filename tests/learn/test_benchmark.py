"""``robot-rl bench learning`` end to end in its quick form, and the arithmetic of its report."""

import json
from dataclasses import asdict

import pytest

from robot_rl.learn.benchmark import (HIL_DEMO_PHASE, LearningBenchConfig, OutDirInUse, TaskSchedule,
                                     arm_ppo_settings, bench_learning, demos_dir_name, episodes_to_reach, goals,
                                     out_dir_lock, quick_config)


def test_quick_benchmark_runs_every_arm_through_the_asynchronous_loop(tmp_path, tiny_export, tiny_critic):
    config = quick_config(policy=str(tiny_export), critic=str(tiny_critic), out_dir=str(tmp_path / "runs"),
                          tasks=["reach_cube", "pick_cube"], task_schedule="needs_help")
    report = bench_learning(config, str(tmp_path / "learning.json"), str(tmp_path / "learning.png"), quick=True,
                            echo=lambda *_: None)
    assert json.loads((tmp_path / "learning.json").read_text())["summary"] == report["summary"]
    assert (tmp_path / "learning.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    runs = {r["arm"]: r for r in report["runs"]}
    assert set(runs) == {"sparse", "progress", "progress+hil"} and report["quick"] and report["claim"].startswith("none")
    for arm, run in runs.items():
        # every eval point evaluated the weights after the updates that used that many episodes
        assert [(e["episodes"], e["version"]) for e in run["evaluations"]] == [(0, 0), (3, 1), (6, 2)], arm
        assert set(run["evaluations"][0]["per_task"]) == {"reach_cube", "pick_cube"}
        assert run["training"]["episodes"] == 6 and run["learner"]["updates"] == 2 and run["learner"]["dropped_stale"] == 0
        # how much of a step was signal, pooled over both updates (ppo.py section 10)
        assert run["learner"]["gradient_noise_updates"] == 2 and 0 < run["learner"]["gradient_signal_share_high"] <= 1
    # the same starting policy, evaluated deterministically on the same held-out layouts, in every arm
    assert len({json.dumps(r["evaluations"][0]["per_task"]) for r in runs.values()}) == 1
    # only the HIL arm has a human, demonstrations and return-and-explore
    assert runs["sparse"]["training"]["intervention_rate"] == runs["progress"]["training"]["intervention_rate"] == 0
    hil = runs["progress+hil"]
    assert hil["training"]["episodes_with_intervention"] > 0 and hil["learner"]["human_steps"] > 0
    assert hil["learner"]["demo_buffer"] > hil["learner"]["human_steps"]  # plus the preloaded demonstrations
    assert runs["progress"]["learner"]["demo_buffer"] == 0
    # the tasks in turn where no human's take-overs say what needs practice; with one, two rounds in turn
    # and then drawn by them
    assert runs["sparse"]["training"]["episodes_per_task"] == {"reach_cube": 3, "pick_cube": 3}
    per_task = hil["training"]["episodes_per_task"]
    assert sum(per_task.values()) == 6 and min(per_task.values()) >= 2 and report["config"]["task_schedule"] == "needs_help"
    # the supervised phase on the demo buffer ran where there is a buffer
    assert hil["learner"]["demo_steps"] == 2 and hil["learner"]["demo_phase_nll_mean"] > 0
    assert runs["progress"]["learner"]["demo_steps"] == 0 and runs["progress"]["learner"]["demo_phase_nll_mean"] is None
    assert set(report["goals"]) == {"progress+hil_final_at_least_0.9", "progress_above_sparse",
                                    "progress+hil_reaches_0.8_in_two_thirds_of_progress"}


def test_quick_benchmark_trains_a_cartesian_policy_with_the_human(tmp_path, tiny_cartesian_export, tiny_critic):
    """The arm-frame action mode through the whole loop: exploration in the arm frame, executed chunks read
    back through the forward kinematics by the learner, human steps in the demo buffer, weights swapped."""
    config = quick_config(policy=str(tiny_cartesian_export[2]), critic=str(tiny_critic), out_dir=str(tmp_path / "runs"),
                          tasks=["reach_cube", "pick_cube"], arms=["progress+hil"])
    report = bench_learning(config, str(tmp_path / "learning.json"), None, quick=True, echo=lambda *_: None)
    (hil,) = report["runs"]
    assert [(e["episodes"], e["version"]) for e in hil["evaluations"]] == [(0, 0), (3, 1), (6, 2)]
    assert hil["learner"]["updates"] == 2 and hil["learner"]["human_steps"] > 0
    assert all(0.0 <= e["mean"] <= 1.0 for e in hil["evaluations"])


def test_the_demo_replay_arm_has_the_hil_arms_demo_phase_and_no_human(tmp_path, tiny_export, tiny_critic):
    assert LearningBenchConfig().arms == ["sparse", "progress", "progress+hil"]  # the control arm is asked for by name
    config = quick_config(policy=str(tiny_export), critic=str(tiny_critic), out_dir=str(tmp_path / "runs"),
                          tasks=["reach_cube"], arms=["progress+demos"])
    report = bench_learning(config, str(tmp_path / "learning.json"), quick=True, echo=lambda *_: None)
    (run,) = report["runs"]
    assert run["training"]["episodes"] == 6 and run["training"]["intervention_rate"] == 0
    assert run["training"]["restored_from_failure_states"] == 0 and run["learner"]["human_steps"] == 0
    assert run["learner"]["demo_buffer"] > 0 and run["learner"]["demo_steps"] == 2 and run["learner"]["demo_phase_nll_mean"] > 0
    ppo = report["learner_settings"]["progress+demos"]["ppo"]
    assert ppo["demo_lr"] == HIL_DEMO_PHASE["demo_lr"] and ppo["demo_human_fraction"] == HIL_DEMO_PHASE["demo_human_fraction"]
    assert report["learner_settings"]["progress+demos"]["reward"]["shaping_scale"] == 1.0


def test_goals_are_checked_on_the_measured_curves():
    def arm(curve, std=0.0):
        return {"final": curve[-1], "std_success": [std] * len(curve), "episodes": [0, 25, 50, 75],
                "episodes_to_80": episodes_to_reach([0, 25, 50, 75], curve, 0.8)}

    assert episodes_to_reach([0, 25, 50], [0.3, 0.8, 0.9], 0.8) == 25
    assert episodes_to_reach([0, 25, 50], [0.3, 0.5, 0.7], 0.8) is None
    met = goals({"sparse": arm([0.3, 0.3, 0.4, 0.4]), "progress": arm([0.3, 0.5, 0.7, 0.85]),
                 "progress+hil": arm([0.3, 0.8, 0.9, 0.95])})
    assert met == {"progress+hil_final_at_least_0.9": True, "progress_above_sparse": True,
                   "progress+hil_reaches_0.8_in_two_thirds_of_progress": True}
    missed = goals({"sparse": arm([0.3, 0.5, 0.6, 0.7], std=0.2), "progress": arm([0.3, 0.5, 0.7, 0.8]),
                    "progress+hil": arm([0.3, 0.5, 0.7, 0.85])})
    assert missed == {"progress+hil_final_at_least_0.9": False, "progress_above_sparse": False,
                      "progress+hil_reaches_0.8_in_two_thirds_of_progress": False}
    # progress never reaches 0.8 in the run: it needs more than 75 episodes, so the HIL arm shows the goal
    # by getting there within 50, not at 75 (that would need progress to need 113 or more, unknown)
    never = arm([0.3, 0.5, 0.6, 0.7])
    assert goals({"progress": never, "progress+hil": arm([0.3, 0.6, 0.8, 0.8])})[
        "progress+hil_reaches_0.8_in_two_thirds_of_progress"] is True
    assert goals({"progress": never, "progress+hil": arm([0.3, 0.6, 0.7, 0.8])})[
        "progress+hil_reaches_0.8_in_two_thirds_of_progress"] is False
    # from a start already at 0.8 both arms "reach" it at 0 episodes: the goal says nothing, so it is not checked
    strong = goals({"progress": arm([0.85, 0.8, 0.75, 0.7]), "progress+hil": arm([0.85, 0.85, 0.9, 0.9])})
    assert strong["progress+hil_reaches_0.8_in_two_thirds_of_progress"] is None
    assert strong["progress+hil_final_at_least_0.9"] is True


def test_a_second_benchmark_on_the_same_out_dir_is_refused_and_deletes_nothing(tmp_path):
    out = tmp_path / "runs"
    earlier = out / "progress" / "seed0" / "learner" / "eval.jsonl"  # a run of the benchmark that holds the dir
    earlier.parent.mkdir(parents=True)
    earlier.write_text('{"episodes": 0}\n')
    config = LearningBenchConfig(arms=["progress"], seeds=1, out_dir=str(out))
    with out_dir_lock(str(out)):
        with pytest.raises(OutDirInUse, match=r"--out-dir .*runs: another bench learning \(pid \d+\)"):
            bench_learning(config, str(tmp_path / "second.json"), echo=lambda *_: None)
    assert earlier.read_text() == '{"episodes": 0}\n' and not (tmp_path / "second.json").exists()
    with out_dir_lock(str(out)):  # released when its holder is done: the next benchmark takes it
        pass


def test_the_hil_arm_has_its_demo_phase_and_the_run_overrides_win():
    assert arm_ppo_settings(LearningBenchConfig(), "progress+hil") == HIL_DEMO_PHASE
    assert HIL_DEMO_PHASE["demo_steps"] > 0 and 0 < HIL_DEMO_PHASE["demo_human_fraction"] < 1
    assert arm_ppo_settings(LearningBenchConfig(), "progress") == arm_ppo_settings(LearningBenchConfig(), "sparse") == {}
    mine = LearningBenchConfig(learner={"ppo": {"demo_steps": 7, "lr": 1e-4}})
    assert arm_ppo_settings(mine, "progress+hil") == {**HIL_DEMO_PHASE, "demo_steps": 7, "lr": 1e-4}
    assert arm_ppo_settings(mine, "sparse") == {"demo_steps": 7, "lr": 1e-4}


def test_the_needs_help_schedule_practises_where_the_human_steps_in_and_starves_no_task():
    tasks = ["reach_cube", "press_button", "push_cube_to_pad", "pick_cube"]
    in_turn = TaskSchedule(tasks, "round_robin", seed=0)
    assert [in_turn.next(i) for i in range(6)] == tasks + tasks[:2]
    schedule = TaskSchedule(tasks, "needs_help", seed=0)
    drawn = []
    for i in range(400):
        task = schedule.next(i)
        drawn.append(task)
        schedule.record(task, 3 if task == "push_cube_to_pad" else 0)
    assert drawn[:8] == tasks + tasks  # two rounds in turn before any take-over counts
    later = drawn[8:]
    # push needs 3 take-overs an episode, the others none: weights 3.25 against 0.25 each (81%)
    assert 0.72 < later.count("push_cube_to_pad") / len(later) < 0.90
    assert all(later.count(t) >= 10 for t in tasks)  # the floor keeps every task in practice
    # the same seed, the same draws
    again = TaskSchedule(tasks, "needs_help", seed=0)
    for i, task in enumerate(drawn):
        assert again.next(i) == task
        again.record(task, 3 if task == "push_cube_to_pad" else 0)


def test_a_report_from_before_the_task_schedule_resumes_as_round_robin(tmp_path, tiny_export, monkeypatch):
    import robot_rl.learn.benchmark as benchmark

    settings = dict(policy=str(tiny_export), out_dir=str(tmp_path / "runs"), tasks=["reach_cube"], episodes=5,
                    eval_every=5, episodes_per_update=5, seeds=1, arms=["progress"])
    config = json.loads(json.dumps(asdict(LearningBenchConfig(**settings))))
    config.pop("task_schedule")  # written before the setting existed
    out = tmp_path / "learning.json"
    out.write_text(json.dumps({"benchmark": "learning", "quick": False, "runs": [], "config": config,
                               "policy": benchmark._policy_summary(LearningBenchConfig(**settings)),
                               "learner_settings": {"progress": benchmark.learner_settings(LearningBenchConfig(**settings),
                                                                                           "progress")},
                               "oracle_version": benchmark.ORACLE_VERSION}))
    assert benchmark.measured_runs(LearningBenchConfig(**settings), str(out)) == ({}, 0.0)
    with pytest.raises(ValueError, match=r"task_schedule 'round_robin' \(now 'needs_help'\)"):
        benchmark.measured_runs(LearningBenchConfig(**settings, task_schedule="needs_help"), str(out))


def test_bad_benchmark_settings_name_what_is_wrong():
    with pytest.raises(ValueError, match="task_schedule 'by_hand'"):
        LearningBenchConfig(task_schedule="by_hand")
    with pytest.raises(ValueError, match="unknown arms.*'hil'"):
        LearningBenchConfig(arms=["hil"])
    with pytest.raises(ValueError, match="eval_every .7. must be a multiple of episodes_per_update .5."):
        LearningBenchConfig(eval_every=7)
    with pytest.raises(ValueError, match="unknown task"):
        LearningBenchConfig(tasks=["stack_cubes"])
    with pytest.raises(ValueError, match=r"simulated human settings \['patients'\]: expected some of \['trigger'"):
        LearningBenchConfig(human={"patients": 3})
    with pytest.raises(ValueError, match="trigger 'stalled'"):
        LearningBenchConfig(human={"trigger": "stalled"})


def test_demonstrations_are_cached_per_count_tasks_and_policy():
    base = LearningBenchConfig(arms=["progress+hil"])
    names = {demos_dir_name(c) for c in (base, LearningBenchConfig(demos_per_task=50),
                                         LearningBenchConfig(tasks=["reach_cube"]),
                                         LearningBenchConfig(policy="runs/other_policy"),
                                         LearningBenchConfig(demo_behaviour="dart"))}
    assert len(names) == 5
    # the oracle's cache keeps the name it had before demonstrations could be collected another way
    assert demos_dir_name(base) == "demos-200-per-task-e4069988"
    with pytest.raises(ValueError, match="demo_behaviour 'noisy'"):
        LearningBenchConfig(demo_behaviour="noisy")  # imperfect actions are no demonstrations
    assert demos_dir_name(base) == demos_dir_name(LearningBenchConfig(arms=["sparse"], episodes=20))
    assert demos_dir_name(LearningBenchConfig(demos_per_task=50)).startswith("demos-50-per-task-")


def test_demonstrations_of_another_oracle_are_not_reused(monkeypatch):
    import robot_rl.learn.benchmark as benchmark

    now = demos_dir_name(LearningBenchConfig())
    monkeypatch.setattr(benchmark, "ORACLE_VERSION", benchmark.ORACLE_VERSION + 1)
    assert demos_dir_name(LearningBenchConfig()) != now


def test_an_evaluator_whose_benchmark_was_killed_stops_waiting(tmp_path, tiny_export):
    import os
    import threading

    from robot_rl.learn.benchmark import _evaluator_main

    spec = {"run_dir": str(tmp_path), "policy": str(tiny_export), "tasks": ["reach_cube"], "seed": 0, "threads": 1,
            "execute_steps": 4, "points": [0], "eval_seeds": 1}
    # weights for point 0 never come; with its parent alive it waits, with its parent gone it returns
    for parent, returns in ((os.getppid(), False), (-1, True)):
        worker = threading.Thread(target=_evaluator_main, args=({**spec, "parent": parent},), daemon=True)
        worker.start()
        worker.join(timeout=5.0)
        assert worker.is_alive() is not returns, parent
    (tmp_path / "learner_failed").touch()  # lets the first, still waiting thread end


def test_resume_keeps_the_measured_runs_and_measures_only_the_missing_ones(tmp_path, tiny_export, monkeypatch):
    import robot_rl.learn.benchmark as benchmark

    measured = []

    def fake_run(config, arm, seed, echo):  # the loop itself is test_quick_benchmark's; here: which runs
        measured.append((arm, seed))
        curve = [0.5, 0.5 + 0.1 * seed + (0.05 if arm == "progress" else 0.0)]
        return {"arm": arm, "seed": seed, "wall_s": 10.0 + len(measured), "train_s": 1.0,
                "evaluations": [{"episodes": n, "version": i, "mean": m, "per_task": {"reach_cube": m}}
                                for i, (n, m) in enumerate(zip([0, 5], curve))],
                "training": {"intervention_rate": 0.0}, "learner": {}}

    monkeypatch.setattr(benchmark, "run_arm", fake_run)
    settings = dict(policy=str(tiny_export), out_dir=str(tmp_path / "runs"), tasks=["reach_cube"], episodes=5,
                    eval_every=5, episodes_per_update=5)
    out = str(tmp_path / "learning.json")
    first = bench_learning(LearningBenchConfig(arms=["sparse"], seeds=1, **settings), out, echo=lambda *_: None)
    assert measured == [("sparse", 0)]
    lines = []
    grown = bench_learning(LearningBenchConfig(arms=["sparse", "progress"], seeds=2, **settings), out,
                           echo=lines.append, resume=True)
    assert measured == [("sparse", 0), ("progress", 0), ("sparse", 1), ("progress", 1)]
    assert grown["runs"][0] == first["runs"][0]  # kept as it was measured, wall time included
    assert [(r["arm"], r["seed"]) for r in grown["runs"]] == [("sparse", 0), ("progress", 0), ("sparse", 1), ("progress", 1)]
    assert grown["summary"]["sparse"]["final"] == 0.55 and grown["summary"]["progress"]["final"] == 0.6
    assert json.loads(open(out).read())["runs"] == grown["runs"]
    assert any("1 run(s) kept" in line for line in lines) and any("kept from the earlier report" in line for line in lines)
    # everything measured: a resume measures nothing; without --resume every run is measured again
    bench_learning(LearningBenchConfig(arms=["sparse", "progress"], seeds=2, **settings), out, echo=lambda *_: None,
                   resume=True)
    assert len(measured) == 4
    bench_learning(LearningBenchConfig(arms=["sparse"], seeds=1, **settings), str(tmp_path / "other.json"),
                   echo=lambda *_: None, resume=True)  # no report there yet: a plain run
    assert measured[-1] == ("sparse", 0) and len(measured) == 5
    # a resumed benchmark stopped in its first new run still holds every run it kept, later seeds' too
    def stopped(config, arm, seed, echo):
        raise KeyboardInterrupt

    monkeypatch.setattr(benchmark, "run_arm", stopped)
    with pytest.raises(KeyboardInterrupt):
        bench_learning(LearningBenchConfig(arms=["sparse", "progress", "progress+hil"], seeds=2, **settings), out,
                       echo=lambda *_: None, resume=True)
    written = json.loads(open(out).read())["runs"]
    assert written == grown["runs"]  # seed 1's kept runs too, though the loop stopped in seed 0


def test_resume_refuses_a_report_of_another_experiment(tmp_path, tiny_export, monkeypatch):
    import robot_rl.learn.benchmark as benchmark

    settings = dict(policy=str(tiny_export), out_dir=str(tmp_path / "runs"), tasks=["reach_cube"], episodes=5,
                    eval_every=5, episodes_per_update=5, seeds=1)
    out = tmp_path / "learning.json"
    report = {"benchmark": "learning", "quick": False, "runs": [],
              "config": json.loads(json.dumps(asdict(LearningBenchConfig(**settings)))),
              "policy": benchmark._policy_summary(LearningBenchConfig(**settings)),
              "oracle_version": benchmark.ORACLE_VERSION}
    out.write_text(json.dumps(report))
    monkeypatch.setattr(benchmark, "run_arm", lambda *a: pytest.fail("nothing may run on a refused resume"))
    with pytest.raises(ValueError, match=r"learning.json was measured with other settings: episodes 5 \(now 10\)"):
        bench_learning(LearningBenchConfig(**{**settings, "episodes": 10}), str(out), resume=True, echo=lambda *_: None)
    with pytest.raises(ValueError, match=r"human \{\} \(now \{'trigger': 'stall'\}\)"):
        bench_learning(LearningBenchConfig(**settings, human={"trigger": "stall"}), str(out), resume=True,
                       echo=lambda *_: None)
    with pytest.raises(ValueError, match="quick False .now True."):
        bench_learning(LearningBenchConfig(**settings), str(out), quick=True, resume=True, echo=lambda *_: None)
    out.write_text(json.dumps({**report, "policy": {**report["policy"], "parameters": 1}}))
    with pytest.raises(ValueError, match="starting policy"):
        bench_learning(LearningBenchConfig(**settings), str(out), resume=True, echo=lambda *_: None)
    # the oracle plays the human and made the demonstrations: the HIL runs of a report of the first one
    # (which did not record its version) are another experiment since it changed; PPO-only runs are not
    run = {"seed": 0, "wall_s": 1.0, "train_s": 1.0, "training": {"intervention_rate": 0.0}, "learner": {},
           "evaluations": [{"episodes": n, "version": 0, "mean": 0.5, "per_task": {"reach_cube": 0.5}} for n in (0, 5)]}
    first_oracle = {**{k: v for k, v in report.items() if k != "oracle_version"},
                    "learner_settings": {arm: benchmark.learner_settings(LearningBenchConfig(**settings), arm)
                                         for arm in ("progress", "progress+hil")}}
    out.write_text(json.dumps({**first_oracle, "runs": [{**run, "arm": "progress+hil"}]}))
    monkeypatch.setattr(benchmark, "ORACLE_VERSION", 2)
    with pytest.raises(ValueError, match=r"oracle_version 1 \(now 2\) in the runs of progress\+hil"):
        bench_learning(LearningBenchConfig(**settings), str(out), resume=True, echo=lambda *_: None)
    out.write_text(json.dumps({**first_oracle, "runs": [{**run, "arm": "progress"}]}))
    kept = bench_learning(LearningBenchConfig(**{**settings, "arms": ["progress"]}), str(out), resume=True,
                          echo=lambda *_: None)
    assert [r["arm"] for r in kept["runs"]] == ["progress"] and kept["oracle_version"] == 2
    out.write_text("{not json")
    with pytest.raises(ValueError, match="learning.json is not a readable benchmark report"):
        bench_learning(LearningBenchConfig(**settings), str(out), resume=True, echo=lambda *_: None)
    out.write_text(json.dumps({"benchmark": "loop"}))
    with pytest.raises(ValueError, match="not a 'robot-rl bench learning' report"):
        bench_learning(LearningBenchConfig(**settings), str(out), resume=True, echo=lambda *_: None)


def test_resume_compares_the_learner_settings_that_ran_not_how_they_were_asked_for(tmp_path, tiny_export, monkeypatch):
    """The value fit became the default after reports had been written with it off (and some with it on
    through --set): a resume must refuse the first and accept the second, and newer reports carry
    their resolved settings."""
    import robot_rl.learn.benchmark as benchmark

    settings = dict(policy=str(tiny_export), out_dir=str(tmp_path / "runs"), tasks=["reach_cube"], episodes=5,
                    eval_every=5, episodes_per_update=5, seeds=1, arms=["sparse"])
    out = tmp_path / "learning.json"
    monkeypatch.setattr(benchmark, "run_arm", lambda *a: pytest.fail("nothing may run: the report holds every run"))
    run = {"arm": "sparse", "seed": 0, "wall_s": 1.0, "train_s": 1.0, "training": {"intervention_rate": 0.0},
           "learner": {}, "evaluations": [{"episodes": n, "version": 0, "mean": 0.5, "per_task": {"reach_cube": 0.5}}
                                          for n in (0, 5)]}

    def old_report(learner: dict) -> None:  # written before reports recorded learner_settings
        config = json.loads(json.dumps(asdict(LearningBenchConfig(**settings, learner=learner))))
        out.write_text(json.dumps({"benchmark": "learning", "quick": False, "runs": [run], "config": config,
                                   "policy": benchmark._policy_summary(LearningBenchConfig(**settings)),
                                   "oracle_version": benchmark.ORACLE_VERSION}))

    old_report({})  # the value fit off: the default then
    with pytest.raises(ValueError, match=r"sparse ppo.value_steps 0 \(now 200\)"):
        bench_learning(LearningBenchConfig(**settings), str(out), resume=True, echo=lambda *_: None)
    kept = bench_learning(LearningBenchConfig(**settings, learner={"ppo": {"value_steps": 0}}), str(out), resume=True,
                          echo=lambda *_: None)  # asked for explicitly now: the same experiment
    assert kept["runs"] == [run]
    assert kept["learner_settings"]["sparse"]["ppo"]["value_steps"] == 0
    assert kept["learner_settings"]["sparse"]["reward"]["shaping_scale"] == 0.0
    old_report({"ppo": {"value_steps": 200}})  # the fit asked for by --set: what the default is now
    kept = bench_learning(LearningBenchConfig(**settings), str(out), resume=True, echo=lambda *_: None)
    assert kept["runs"] == [run] and kept["learner_settings"]["sparse"]["ppo"]["value_steps"] == 200
    # a report with recorded settings is compared on them
    with pytest.raises(ValueError, match=r"sparse ppo.lr 3e-05 \(now 0.001\)"):
        bench_learning(LearningBenchConfig(**settings, learner={"ppo": {"lr": 1e-3}}), str(out), resume=True,
                       echo=lambda *_: None)
    # a setting added since the report was written (not in its record) ran as the code did without it
    recorded = json.loads(out.read_text())
    del recorded["learner_settings"]["sparse"]["ppo"]["anchor_coef"]
    out.write_text(json.dumps(recorded))
    assert bench_learning(LearningBenchConfig(**settings), str(out), resume=True, echo=lambda *_: None)["runs"] == [run]
    with pytest.raises(ValueError, match=r"sparse ppo.anchor_coef 0.0 \(now 1.0\)"):
        bench_learning(LearningBenchConfig(**settings, learner={"ppo": {"anchor_coef": 1.0}}), str(out), resume=True,
                       echo=lambda *_: None)
