"""Does the data of a few hundred exploring episodes hold a usable direction for the actions? One
policy-improvement step along a learned action-value, measured on held-out layouts.

A diagnostic for docs/learning-benchmark.md item 45 (not part of the package). Item 44 measured that a
PPO step is almost all noise at this scale: the score-function estimator sends the noise of every
executed action dimension through every parameter. HIL-SERL and RLPD learn from few episodes with the
other estimator: a learned action-value Q(s, a) whose gradient in the action moves the policy (DDPG,
TD3, SAC). This script asks the question that estimator needs answered first, on the same episodes:

1. The benchmark's exploring actor (``SimActor``, ``execute_steps`` 4, the settle tail) runs N episodes
   per task with the starting policy. For every decision, ``delta`` is the executed chunk as the
   model's draw: (normalised executed positions - the model's mean) / its std, so N(0, 1) per executed
   dimension and 0 at the positions the robot never executed.
2. Each decision's target y is its GAE(lambda) return under the chosen reward (``--reward``: the
   learner's ``sparse`` or ``progress`` from the progress critic, or the simulator's ``true_sparse``
   / ``true_progress``, which no learner has), with a value cross-fitted on the other half of the
   episodes. At lambda 0 (the default) y = r + gamma V(s'): the chunk's own effect and little else.
3. On the trunk's features z (the starting model's, fixed), two regressions of y, cross-fitted over
   two folds of episodes: a baseline b(z), and b(z) + w . delta, where w is the local slope of the
   return in the action, the direction a reparameterised actor update would take: ``--slope task``
   (default) one slope per task and chunk dimension, a ridge regression of what b leaves; ``--slope
   mlp`` w(z), a small MLP of the features with one output per chunk dimension (more capacity, and it
   overfits 200 episodes: its held-out share is below zero). ``action_r2`` is the share of the held-out
   squared error of b that w(z) . delta removes (with a standard error over held-out episodes): zero
   means the episodes hold no action signal a critic could learn, whatever the learner.
4. The step: w fitted on every episode, the starting model's action head (a linear layer on z) is
   refitted by ridge regression so that its mean moves by ``eta * std * w(z) / rms(w)`` at the visited
   states (the executed positions only), for each ``--etas`` step size in standard deviations. A
   placebo does the same with w fitted after shuffling delta across decisions (no action signal, same
   step size): the difference between the two is what the signal bought.
5. Each stepped policy, the placebo and the start are evaluated without exploration on the benchmark's
   held-out layouts (``EVAL_SEED``, 50 per task by default): the same layouts for all, so differences are
   paired.
6. ``--iterations K`` goes on as a learner would: each further round explores with the last stepped
   policy on new layouts, refits the slope on that round's episodes and steps again (the first step
   size), evaluated after each round.

    MUJOCO_GL=egl .venv/bin/python scripts/action_value_step.py --policy policies/sim_default \
        --episodes 50 --reward progress --json docs/results/action-value-step-sim-default-progress.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


TASK_RIDGE = 25.0  # per-task slopes: about 275 decisions x 20-24 executed dimensions per fold and task


def fit_regression(features, delta, targets, rows, with_action: bool, seed: int, steps: int = 1500,
                   hidden: int = 64, weight_decay: float = 1e-4):
    """b(z) [+ w(z) . delta] fitted to ``targets`` on ``rows``; returns a callable (rows -> prediction)
    and the slope network w (None without the action term)."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    width, dims = features.shape[1], delta.shape[1]
    base = nn.Sequential(nn.Linear(width, hidden), nn.SiLU(), nn.Linear(hidden, 1))
    slope = nn.Sequential(nn.Linear(width, hidden), nn.SiLU(), nn.Linear(hidden, dims)) if with_action else None
    params = list(base.parameters()) + (list(slope.parameters()) if slope is not None else [])
    optimiser = torch.optim.AdamW(params, lr=1e-3, weight_decay=weight_decay)
    y = torch.from_numpy(targets)
    scale = float(y[rows].std().clamp_min(1e-6))
    predict = lambda r: base(features[r]).squeeze(-1) + (
        (slope(features[r]) * delta[r]).sum(-1) if slope is not None else 0.0)
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        batch = torch.from_numpy(rng.choice(rows, min(128, len(rows)), replace=False))
        optimiser.zero_grad()
        torch.nn.functional.mse_loss(predict(batch) / scale, y[batch] / scale).backward()
        optimiser.step()
    return (lambda r: predict(torch.from_numpy(r)).detach().numpy()), slope


def task_slopes(residual: np.ndarray, delta: np.ndarray, task: np.ndarray, rows: np.ndarray, ridge: float) -> np.ndarray:
    """One slope per task (tasks x chunk dimensions): ridge regression of what b(z) leaves, on delta."""
    slopes = np.zeros((task.max() + 1, delta.shape[1]))
    for t in np.unique(task[rows]):
        x, r = delta[rows[task[rows] == t]], residual[rows[task[rows] == t]]
        slopes[t] = np.linalg.solve(x.T @ x + ridge * np.eye(x.shape[1]), x.T @ r)
    return slopes


def action_r2(features, delta, targets, fold, episode, task, slope_kind: str, seed: int) -> dict:
    """Held-out share of b(z)'s squared error that the action term removes, cross-fitted over two folds;
    its standard error from the per-episode differences (episodes are the independent units)."""
    err_base, err_action = np.zeros(len(targets)), np.zeros(len(targets))
    delta_np = delta.numpy().astype(np.float64)
    for k in (0, 1):
        train, test = np.nonzero(fold != k)[0], np.nonzero(fold == k)[0]
        base, _ = fit_regression(features, delta, targets, train, False, seed + k)
        err_base[test] = (base(test) - targets[test]) ** 2
        if slope_kind == "mlp":
            full, _ = fit_regression(features, delta, targets, train, True, seed + k)
            err_action[test] = (full(test) - targets[test]) ** 2
        else:
            slopes = task_slopes(targets - base(np.arange(len(targets))), delta_np, task, train, TASK_RIDGE)
            action = (slopes[task[test]] * delta_np[test]).sum(-1)
            err_action[test] = (base(test) + action - targets[test]) ** 2
    per_episode = np.asarray([[err_base[episode == e].sum(), err_action[episode == e].sum()] for e in np.unique(episode)])
    total = per_episode[:, 0].sum()
    gain = per_episode[:, 0] - per_episode[:, 1]
    m = len(gain)
    return {"base_mse": float(err_base.mean()), "action_mse": float(err_action.mean()),
            "action_r2": float(gain.sum() / total), "action_r2_se": float(np.sqrt(m) * gain.std(ddof=1) / total)}


def step_head(model, features, slope, delta_mask, eta: float):
    """A copy of ``model`` whose action head is refitted (ridge, towards its own weights) so that its
    mean moves by eta * std * w / rms(w) at the visited states, executed positions only; ``slope``: w
    at every visited state, (N, H*P)."""
    import copy

    import torch

    with torch.no_grad():
        w = slope * delta_mask  # (N, H*P)
        rms = float(w.pow(2).sum(-1).div(delta_mask.sum(-1).clamp_min(1)).mean().sqrt().clamp_min(1e-12))
        std = model.log_std.exp().reshape(1, -1)
        shift = eta * std * w / rms  # the change of the normalised mean, (N, H*P)
        z1 = torch.cat([features, torch.ones(len(features), 1)], 1).double()
        ridge = 1e-3 * float(torch.trace(z1.T @ z1)) / z1.shape[1]
        update = torch.linalg.solve(z1.T @ z1 + ridge * torch.eye(z1.shape[1], dtype=torch.float64),
                                    z1.T @ shift.double())  # (513, H*P): the head's change
        stepped = copy.deepcopy(model)
        stepped.action_head.weight += update[:-1].T.float()
        stepped.action_head.bias += update[-1].float()
        achieved = (z1 @ update).float()
        moved = float(((achieved / std).pow(2) * delta_mask).sum() / delta_mask.sum())
    return stepped, {"eta": eta, "moved_rms_std": moved ** 0.5,
                     "fit_cosine": float((achieved * shift).sum() / (achieved.norm() * shift.norm()).clamp_min(1e-12))}


def main() -> None:
    import torch

    from gradient_noise import next_state_values, reward_functions, rewarded_decisions
    from robot_rl.learn.actor import SimActor
    from robot_rl.learn.benchmark import evaluate_weights
    from robot_rl.learn.learner import LearnerConfig, load_start_policy, state_bytes
    from robot_rl.learn.ppo import PPOConfig, collate, gae, tensors, trunk_features
    from robot_rl.policy.base import PolicyConfig, make_policy
    from robot_rl.policy.text import InstructionEncoder
    from robot_rl.sim.tasks import TASKS

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--policy", default="policies/sim_default")
    parser.add_argument("--critic", default="policies/sim_critic")
    parser.add_argument("--episodes", type=int, default=50, help="exploring episodes per task")
    parser.add_argument("--seed", type=int, default=800000, help="the exploring episodes' first layout")
    parser.add_argument("--reward", default="progress", choices=["sparse", "progress", "true_sparse", "true_progress"])
    parser.add_argument("--gae-lambda", type=float, default=0.0)
    parser.add_argument("--target", default="return", choices=["return", "reward"],
                        help="y: the GAE(lambda) return, or the decision's own reward alone (the chunk's immediate "
                             "effect: a check that the regression finds what is there)")
    parser.add_argument("--etas", default="0.25,0.5,1.0", help="step sizes, in the policy's standard deviations")
    parser.add_argument("--slope", default="task", choices=["task", "mlp"],
                        help="w: one slope per task (ridge), or w(z) a small MLP of the trunk's features")
    parser.add_argument("--placebos", type=int, default=1,
                        help="placebo steps per step size, each from its own shuffle (their spread is what a "
                             "random direction of that size does)")
    parser.add_argument("--iterations", type=int, default=1,
                        help="rounds of explore -> refit -> step with the first step size (each round --episodes "
                             "per task on new layouts, with the last round's policy)")
    parser.add_argument("--eval-seeds", type=int, default=50, help="held-out layouts per task")
    parser.add_argument("--json", default="")
    args = parser.parse_args()
    etas = [float(x) for x in args.etas.split(",") if x.strip()]
    if not etas or any(e <= 0 for e in etas):
        raise SystemExit(f"--etas: positive step sizes expected, got {args.etas!r}")
    if args.iterations < 1:
        raise SystemExit(f"--iterations: at least 1, got {args.iterations}")
    if args.placebos < 1:
        raise SystemExit(f"--placebos: at least 1, got {args.placebos}")
    torch.manual_seed(0)
    t_start = time.time()
    say = lambda text: print(f"[{time.time() - t_start:6.0f} s] {text}", flush=True)

    def policy_with(model=None, explore=False, explore_seed=0):
        policy = make_policy(PolicyConfig(type="vla", options={"path": args.policy, "backend": "torch",
                                                               "explore": explore, "explore_seed": explore_seed}))
        if model is not None:
            policy.load_weights(1, policy.metadata["model_config"], state_bytes(model))
        return policy

    def collect(model, first_seed: int, explore_seed: int) -> list:
        explorer = policy_with(model, explore=True, explore_seed=explore_seed)
        m = explorer.metadata
        actor = SimActor(explorer, list(m["cameras"]), m["image_width"], m["image_height"], m["control_rate_hz"], 4)
        try:
            return [actor.episode(task, first_seed + i) for task in TASKS for i in range(args.episodes)]
        finally:
            actor.close()

    episodes = collect(None, args.seed, 0)
    say(f"{len(episodes)} exploring episodes, {sum(e.meta.success for e in episodes)} successes")

    model, table = load_start_policy(args.policy)
    encoder = InstructionEncoder(table)
    ppo, learner = PPOConfig(), LearnerConfig()
    stride = max(1, round(learner.critic_stride_s * model.config.control_rate_hz))
    reward_of = reward_functions(args.critic, stride, ppo.gamma)[args.reward]

    def decisions_and_targets(model, episodes):
        """The decisions of ``episodes`` with the trunk's features, delta (the executed chunk as
        ``model``'s N(0, 1) draw, 0 where not executed), its mask, the targets and the two folds."""
        per_episode, terminal, keep = rewarded_decisions(episodes, reward_of, model.config.chunk_length, ppo.gamma)
        d = collate([episodes[i] for i in keep], [per_episode[i] for i in keep], [terminal[i] for i in keep])
        features = trunk_features(model, d, encoder.encode)
        with torch.no_grad():
            images, joints, text, actions, mask = tensors(d, np.arange(len(d)), encoder.encode)
            mean, log_std, _ = model.forward_normalised(images, joints, text)
            delta = ((model.normalise_target(actions, joints) - mean) / log_std.exp() * mask[..., None]).reshape(len(d), -1)
            delta_mask = mask[..., None].expand_as(mean).reshape(len(d), -1)
        # the targets: GAE(lambda) returns with a value cross-fitted over two folds of episodes
        fold = (np.asarray(keep) % 2)[d.episode]
        zeros = np.zeros(len(d), np.float32)
        mc_returns = gae(d.rewards, zeros, zeros, d.discounts, d.terminal, d.episode, 1.0)[1]
        values = np.zeros(len(d), np.float32)
        for k in (0, 1):
            value, _ = fit_regression(features, delta, mc_returns, np.nonzero(fold != k)[0], False, 10 + k)
            values[fold == k] = value(np.nonzero(fold == k)[0])
        targets = gae(d.rewards, values, next_state_values(values, d), d.discounts, d.terminal, d.episode,
                      args.gae_lambda)[1].astype(np.float32)
        if args.target == "reward":
            targets = d.rewards.astype(np.float32)
        return d, features, delta, delta_mask, targets, fold

    d, features, delta, delta_mask, targets, fold = decisions_and_targets(model, episodes)
    say(f"{len(d)} decisions rewarded ({args.reward})")
    z_executed = delta[delta_mask.bool()].numpy()

    tasks = sorted(set(d.instructions))
    task = np.asarray([tasks.index(i) for i in d.instructions])
    signal = action_r2(features, delta, targets, fold, d.episode, task, args.slope, seed=20)
    shuffles = [delta[torch.from_numpy(np.random.default_rng(1 + k).permutation(len(d)))] for k in range(args.placebos)]
    shuffled = shuffles[0]
    placebo_signal = action_r2(features, shuffled, targets, fold, d.episode, task, args.slope, seed=20)
    say(f"action r2 {signal['action_r2']:.4f} +- {signal['action_r2_se']:.4f} "
        f"(placebo {placebo_signal['action_r2']:.4f} +- {placebo_signal['action_r2_se']:.4f})")

    def slope_of(deltas, features=features, targets=targets, task=task):
        """w at every visited state, (N, H*P), fitted on every episode."""
        all_rows = np.arange(len(targets))
        if args.slope == "mlp":
            with torch.no_grad():
                return fit_regression(features, deltas, targets, all_rows, True, 30)[1](features)
        base, _ = fit_regression(features, deltas, targets, all_rows, False, 30)
        slopes = task_slopes(targets - base(all_rows), deltas.numpy().astype(np.float64), task, all_rows, TASK_RIDGE)
        return torch.from_numpy(slopes[task]).float()

    slope, placebo_slopes = slope_of(delta), [slope_of(x) for x in shuffles]
    report = {"policy": args.policy, "critic": args.critic, "reward": args.reward, "gae_lambda": args.gae_lambda,
              "target": args.target, "slope": args.slope, "iterations": args.iterations,
              "episodes_per_task": args.episodes, "exploring_successes": int(sum(e.meta.success for e in episodes)),
              "decisions": len(d), "executed_delta_mean_std": [float(z_executed.mean()), float(z_executed.std())],
              "signal": signal, "placebo_signal": placebo_signal, "eval_seeds": args.eval_seeds, "evaluations": []}

    def evaluate(name: str, stepped, info: dict) -> None:
        result = evaluate_weights(policy_with(stepped), list(TASKS), args.eval_seeds, 4)
        report["evaluations"].append({"name": name, **info, **result})
        say(f"{name} {json.dumps(info)}: {result['mean']:.3f} {json.dumps(result['per_task'])}")

    evaluate("start", None, {})
    stepped = {}
    for eta in etas:
        stepped[eta], info = step_head(model, features, slope, delta_mask, eta)
        evaluate("step", stepped[eta], info)
        for k, placebo_slope in enumerate(placebo_slopes):
            evaluate(f"placebo_{k}", *step_head(model, features, placebo_slope, delta_mask, eta))
    # --iterations: the step as a learner would take it, on-policy: each further round explores with
    # the last stepped policy on new layouts, refits the slope on its own episodes and steps again
    current = stepped[etas[0]]
    for round_ in range(1, args.iterations):
        episodes = collect(current, args.seed + round_ * args.episodes, round_)
        d, features, delta, delta_mask, targets, _ = decisions_and_targets(current, episodes)
        task = np.asarray([tasks.index(i) for i in d.instructions])
        current, info = step_head(current, features, slope_of(delta, features, targets, task), delta_mask, etas[0])
        evaluate(f"iteration_{round_ + 1}", current, {**info, "episodes_so_far": (round_ + 1) * len(episodes),
                                                      "exploring_successes": int(sum(e.meta.success for e in episodes))})
    report["wall_s"] = time.time() - t_start
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
