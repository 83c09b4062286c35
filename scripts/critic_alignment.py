"""Does the progress critic's dense reward follow the task's true progress, decision by decision?

A diagnostic for docs/learning-benchmark.md item 43 (not part of the package): an exploring policy
(the benchmark's actor, ``SimActor`` with ``execute_steps`` 4 and the settle tail) runs N episodes per
task; each episode is rewarded as the learner rewards it (``critic_rewards``, shaping on), and each
decision's summed shaping reward (the done's bonus left out: it says the task is done, not how far
a decision moved it) is compared with the simulator's ground-truth progress over the same steps
(``extras["progress"]``, ``task_progress()``: simulation only). Prints and writes JSON per task:
Pearson and Spearman correlation, and the share of decisions whose shaping has the sign of their
true progress where that progress moved.

    MUJOCO_GL=egl .venv/bin/python scripts/critic_alignment.py --policy policies/sim_cartesian_pretrained \
        --episodes 10 --json docs/results/critic-alignment.json
"""

from __future__ import annotations

import argparse
import json

import numpy as np


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def main() -> None:
    from robot_rl.learn.actor import SimActor
    from robot_rl.learn.learner import LearnerConfig, critic_rewards
    from robot_rl.learn.ppo import step_arrays
    from robot_rl.policy.base import PolicyConfig, make_policy
    from robot_rl.reward.base import make_critic
    from robot_rl.reward.shaping import RewardConfig
    from robot_rl.sim.tasks import TASKS

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--policy", default="policies/sim_cartesian_pretrained")
    parser.add_argument("--critic", default="policies/sim_critic")
    parser.add_argument("--episodes", type=int, default=10, help="per task")
    parser.add_argument("--seed", type=int, default=700000)
    parser.add_argument("--json", default="")
    args = parser.parse_args()

    policy = make_policy(PolicyConfig(type="vla", options={"path": args.policy, "backend": "torch", "explore": True,
                                                           "explore_seed": 0}))
    m = policy.metadata
    actor = SimActor(policy, list(m["cameras"]), m["image_width"], m["image_height"], m["control_rate_hz"], 4)
    critic = make_critic(args.critic, allow_unseen_instructions=False)
    config = RewardConfig(success_bonus=0.0)  # the shaping alone; the done still ends the episode
    stride = max(1, round(LearnerConfig.critic_stride_s * m["control_rate_hz"]))  # as the learner scores pairs
    per_task = {}
    try:
        for task in TASKS:
            rewards_all, progress_all = [], []
            for i in range(args.episodes):
                e = actor.episode(task, args.seed + i)
                rewards, done = critic_rewards(critic, e, stride, config)
                _, _, chunk = step_arrays(e)
                progress = np.asarray(e.extras["progress"], np.float64)
                end = done if done is not None else len(e)
                starts = [t for t in range(end) if chunk[t] == 0] + [end]
                for a, b in zip(starts[:-1], starts[1:]):
                    rewards_all.append(float(rewards[a:b].sum()))
                    progress_all.append(float(progress[min(b, len(e) - 1)] - progress[a]))
            r, p = np.asarray(rewards_all), np.asarray(progress_all)
            moved = np.abs(p) > 1e-3
            per_task[task] = {"decisions": len(r), "pearson": float(np.corrcoef(r, p)[0, 1]), "spearman": spearman(r, p),
                              "sign_agreement_where_progress_moved": float(np.mean(np.sign(r[moved]) == np.sign(p[moved])))
                              if moved.any() else None, "moved": int(moved.sum())}
            print(task, per_task[task], flush=True)
    finally:
        actor.close()
    report = {"policy": args.policy, "critic": args.critic, "episodes_per_task": args.episodes, "per_task": per_task}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
