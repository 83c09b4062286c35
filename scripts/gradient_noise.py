"""How many episodes does one PPO step need before it follows the signal rather than the noise?

A diagnostic for docs/learning-benchmark.md item 44 (not part of the package). Items 41-43 concluded
that the PPO arms' steps "follow the noise"; this measures it, for the starting policy and for four
rewards on the *same* episodes, with the gradient-noise scale of McCandlish et al. (2018, "An
Empirical Model of Large-Batch Training"):

- The benchmark's exploring actor (``SimActor``: ``execute_steps`` 4, the settle tail) runs N
  episodes per task with the starting policy (every decision by version 0, so every ratio is 1).
- Each episode is rewarded four ways: ``sparse`` and ``progress`` as the learner rewards them with
  the progress critic (``critic_rewards``; shaping off / on), and two references the learner can
  never have, from simulator ground truth: ``true_sparse`` (bonus 1 on the step that reached
  success) and ``true_progress`` (shaping on the simulator's task progress plus that bonus).
- Advantages are the learner's (GAE, lambda 0.95, gamma 0.99 per control step) with a value head
  cross-fitted on the other half of the episodes (as the learner's ``fit_value``: the value head
  alone, on fixed trunk features), so no episode's baseline saw its own return; they are normalised
  as PPO normalises them.
- Per episode i, g_i is the gradient of sum_d A_d log pi(a_d | s_d) over its decisions: the PPO
  surrogate's gradient at ratio 1, over every trained parameter. An update of b episodes steps along
  their mean. With G the true mean gradient and Sigma the covariance of the g_i, the unbiased
  estimates |G|^2 = (|sum g|^2 - sum |g|^2) / (m (m - 1)) and tr(Sigma) = sum |g_i - mean|^2 / (m - 1)
  give the noise scale B = tr(Sigma) / |G|^2 in episodes: at a batch of b episodes the expected
  share of a step's squared length that is signal is |G|^2 / (|G|^2 + tr(Sigma) / b) = 1 / (1 + B / b).
  Episodes, not decisions, are the unit because an episode's decisions share its outcome.

The standard error of B comes from the delete-one jackknife over episodes; where |G|^2's estimate is
not above zero by two standard errors the signal is indistinguishable from none at this N, and B is
reported as a lower bound. Each estimate is given for all the policy's parameters, for the camera
encoders alone, for the action head with its log-std, for the action head's bias alone (the chunk's
offset, shared by the tasks) and for one such bias per task (``action_bias_per_task``). ``executed_residual_mean_std`` checks the
log-probabilities the gradients come from: the executed actions, normalised by this model's mean and
std, should be N(0, 1) draws. The learner measures the same scale on every run, pooled over its
updates (``learn/ppo.py`` section 10, ``gradient_noise_*`` in its metrics).

``--paired`` runs each layout twice with two draws of noise and adds two episode-level REINFORCE
estimators next to the learner's GAE: the return minus the cross-fitted value of the first state, and
the return minus the pair's return (an unbiased baseline that knows the layout); the gradient of a
pair is then the unit, and B is given in episodes. ``--explore-noise chunk`` explores and scores as
the learner's ``ppo.exploration: chunk``. ``--gae-lambdas 0.5,0`` scores the same episodes with
shorter credit assignment too (estimators ``gae_lambda_<x>``): at lambda 0 a decision's advantage is
its own TD error, which holds none of the later decisions' noise. ``--std-scale k`` explores (and
scores) with k times the policy's standard deviation: for a Gaussian policy the score function's noise
per unit of signal falls with the exploration noise's size, as long as the reward stays smooth.

    MUJOCO_GL=egl .venv/bin/python scripts/gradient_noise.py --policy policies/sim_default \
        --episodes 50 --json docs/results/gradient-noise-sim-default.json     # about 15 min here
"""

from __future__ import annotations

import argparse
import copy
import json
import time

import numpy as np


def noise_scale(gram: np.ndarray) -> dict:
    """|G|^2, tr(Sigma) and B = tr(Sigma) / |G|^2 from the Gram matrix of the per-episode gradients."""
    from robot_rl.learn.ppo import gradient_noise_estimates

    signal, noise = gradient_noise_estimates(len(gram), float(gram.sum()), float(np.trace(gram)))
    return {"signal_sq": signal, "trace_cov": noise, "B_episodes": noise / signal if signal > 0 else float("inf")}


def jackknife(gram: np.ndarray) -> dict:
    """Delete-one jackknife standard errors of |G|^2 and of log B."""
    m = len(gram)
    keep = [np.delete(np.arange(m), i) for i in range(m)]
    rows = [noise_scale(gram[np.ix_(k, k)]) for k in keep]
    signal = np.asarray([r["signal_sq"] for r in rows])
    se = lambda x: float(np.sqrt((m - 1) / m * np.sum((x - x.mean()) ** 2)))
    out = {"signal_sq_se": se(signal)}
    if np.all(signal > 0):
        out["log_B_se"] = se(np.log([r["B_episodes"] for r in rows]))
    return out


def resolve(scale: dict, episodes_per_unit: int = 1) -> dict:
    """Whether |G|^2 is resolved (above two standard errors); where it is not, the smallest B it
    allows, as the learner bounds it (``GradientNoise``: the estimate clamped at 0, plus two standard
    errors); and the largest share of a step of 5, 20, 50 and 200 episodes that can be signal.
    ``episodes_per_unit``: episodes in one gradient of the Gram matrix (2 for paired rollouts)."""
    resolved = scale["signal_sq"] > 2 * scale["signal_sq_se"]
    out = {**scale, "B_episodes": scale["B_episodes"] * episodes_per_unit, "signal_resolved": bool(resolved)}
    if not resolved:
        from robot_rl.learn.ppo import noise_scale_lower_bound

        out["B_episodes_lower_bound"] = episodes_per_unit * noise_scale_lower_bound(
            scale["signal_sq"], scale["trace_cov"], scale["signal_sq_se"])
    b = out["B_episodes"] if resolved else out["B_episodes_lower_bound"]
    out["signal_share_of_step"] = {str(k): 1.0 / (1.0 + b / k) for k in (5, 20, 50, 200)}
    return out


def true_rewards(episode, gamma: float, shaping: bool) -> tuple[np.ndarray, int | None]:
    """Ground-truth rewards (simulation only): shaping on the simulator's task progress (row t's
    progress is the state the row observed) and 1 on the step that reached success, which ends it."""
    progress = np.asarray(episode.extras["progress"], np.float64)
    rewards = np.zeros(len(episode), np.float32)
    if shaping:
        rewards[:-1] = gamma * progress[1:] - progress[:-1]
    done = episode.meta.extra.get("success_step") if episode.meta.success else None
    if done is not None:
        rewards[done - 1] += 1.0
        rewards[done:] = 0.0
    return rewards, done


def reward_functions(critic_path: str, stride: int, gamma: float) -> dict:
    """The four rewards by name: the learner's two from the progress critic, the simulator's two."""
    from robot_rl.learn.learner import critic_rewards
    from robot_rl.reward.base import make_critic
    from robot_rl.reward.shaping import RewardConfig

    critic = make_critic(critic_path, allow_unseen_instructions=False)
    return {
        "sparse": lambda e: critic_rewards(critic, e, stride, RewardConfig(shaping_scale=0.0)),
        "progress": lambda e: critic_rewards(critic, e, stride, RewardConfig()),
        "true_sparse": lambda e: true_rewards(e, gamma, shaping=False),
        "true_progress": lambda e: true_rewards(e, gamma, shaping=True),
    }


def rewarded_decisions(episodes: list, reward_of, horizon: int, gamma: float) -> tuple[list, list, list]:
    """(each episode's decisions under ``reward_of``, whether its reward ended it, the indices of the
    episodes that have decisions)."""
    from robot_rl.learn.ppo import episode_decisions

    per_episode, terminal = [], []
    for e in episodes:
        rewards, done = reward_of(e)
        per_episode.append(episode_decisions(e, rewards, horizon, gamma, end=done))
        terminal.append(done is not None)
    return per_episode, terminal, [i for i, d in enumerate(per_episode) if d]


def next_state_values(values: np.ndarray, d) -> np.ndarray:
    """The value after each decision of ``d``: the next row's, 0 after a terminal one, and a cut
    episode's last value after its last row."""
    next_values = np.append(values[1:], 0.0).astype(np.float32)
    ends = np.nonzero(np.append(d.episode[1:] != d.episode[:-1], True))[0]
    next_values[ends] = np.where(d.terminal[ends], 0.0, values[ends])
    return next_values


def main() -> None:
    import torch

    from robot_rl.learn.actor import SimActor
    from robot_rl.learn.learner import LearnerConfig, load_start_policy, state_bytes
    from robot_rl.learn.ppo import (PPOConfig, chunk_log_prob, collate, gae, loss_advantages, policy_parameters,
                                    tensors, trunk_features)
    from robot_rl.policy.base import PolicyConfig, make_policy
    from robot_rl.policy.text import InstructionEncoder
    from robot_rl.sim.tasks import TASKS

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--policy", default="policies/sim_default")
    parser.add_argument("--critic", default="policies/sim_critic")
    parser.add_argument("--episodes", type=int, default=25, help="per task")
    parser.add_argument("--seed", type=int, default=800000)
    parser.add_argument("--explore-noise", default="step", choices=["step", "chunk"],
                        help="the policy's exploration noise, scored as the learner scores it (ppo.py section 9)")
    parser.add_argument("--paired", action="store_true",
                        help="run each layout twice and compare advantage baselines (the gradient of a pair is the unit)")
    parser.add_argument("--rewards", default="sparse,progress,true_sparse,true_progress")
    parser.add_argument("--gae-lambdas", default="",
                        help="more GAE lambdas to score next to the learner's (comma-separated; estimator gae_lambda_<x>)")
    parser.add_argument("--std-scale", type=float, default=1.0,
                        help="explore with the policy's standard deviation times this, and score with it")
    parser.add_argument("--json", default="")
    args = parser.parse_args()
    torch.manual_seed(0)
    t_start = time.time()

    policy = make_policy(PolicyConfig(type="vla", options={"path": args.policy, "backend": "torch", "explore": True,
                                                           "explore_seed": 0, "explore_noise": args.explore_noise}))
    m = policy.metadata
    model, table = load_start_policy(args.policy)
    if args.std_scale != 1.0:  # the same model explores (published as weights v1) and is scored
        if args.std_scale <= 0:
            raise SystemExit(f"--std-scale must be above 0, got {args.std_scale}")
        with torch.no_grad():
            model.log_std += float(np.log(args.std_scale))
        policy.load_weights(1, m["model_config"], state_bytes(model))
    actor = SimActor(policy, list(m["cameras"]), m["image_width"], m["image_height"], m["control_rate_hz"], 4)
    episodes = []
    try:
        for task in TASKS:
            for i in range(args.episodes):
                # paired: each layout twice in a row, with the noise of two different draws
                episodes.append(actor.episode(task, args.seed + (i // 2 if args.paired else i)))
            print(f"{task}: {args.episodes} episodes, {sum(e.meta.success for e in episodes[-args.episodes:])} "
                  f"successes ({time.time() - t_start:.0f} s)", flush=True)
    finally:
        actor.close()

    encoder = InstructionEncoder(table)
    ppo, learner = PPOConfig(), LearnerConfig()
    stride = max(1, round(learner.critic_stride_s * m["control_rate_hz"]))
    trained = policy_parameters(model)  # the value head's get no policy gradient
    size = sum(p.numel() for p in trained)
    # parameter groups (column ranges of the flattened gradient): all, the camera encoders, the action
    # head with its log-std (what a head-only fine-tune would train)
    names = [n for n, p in model.named_parameters() if any(p is q for q in trained)]
    offsets = np.cumsum([0] + [p.numel() for p in trained])
    pick = lambda test: np.concatenate([np.arange(offsets[k], offsets[k + 1]) for k, n in enumerate(names) if test(n)])
    groups = {"all": np.arange(size), "encoders": pick(lambda n: n.startswith("encoders.")),
              "action_head": pick(lambda n: n.startswith(("action_head.", "log_std"))),
              "action_bias": pick(lambda n: n == "action_head.bias")}
    n = len(episodes)
    half = (np.arange(n) // 2 if args.paired else np.arange(n)) % 2  # two folds, every task in both; pairs together
    rewards_by = reward_functions(args.critic, stride, ppo.gamma)
    rewards_by = {k: v for k, v in rewards_by.items() if k in args.rewards.split(",")}
    lambdas = [float(x) for x in args.gae_lambdas.split(",") if x.strip()]
    if any(not 0.0 <= lam <= 1.0 for lam in lambdas):
        raise SystemExit(f"--gae-lambdas: each lambda must be in [0, 1], got {args.gae_lambdas!r}")
    if args.paired and args.episodes % 2:
        raise SystemExit(f"--paired needs an even --episodes (each layout twice), got {args.episodes}")
    report = {"policy": args.policy, "critic": args.critic, "episodes_per_task": args.episodes,
              "explore_noise": args.explore_noise, "std_scale": args.std_scale, "paired": args.paired, "gae_lambdas": [ppo.gae_lambda, *lambdas],
              "episodes": n, "successes": int(sum(e.meta.success for e in episodes)), "parameters": size,
              "rewards": {}}
    for name, reward_of in rewards_by.items():
        per_episode, terminal, keep = rewarded_decisions(episodes, reward_of, model.config.chunk_length, ppo.gamma)
        if args.paired:  # a pair counts only whole
            keep = [i for i in keep if per_episode[i ^ 1]]
        d = collate([episodes[i] for i in keep], [per_episode[i] for i in keep], [terminal[i] for i in keep])
        # returns for the value fit: the discounted rewards to the episode's end (no bootstrap)
        zeros = np.zeros(len(d), np.float32)
        mc_returns = gae(d.rewards, zeros, zeros, d.discounts, d.terminal, d.episode, 1.0)[1]
        fold = half[np.asarray(keep)][d.episode]
        features = trunk_features(model, d, encoder.encode)
        values = np.zeros(len(d), np.float32)
        for k in (0, 1):  # cross-fitting: each fold's baseline is fitted on the other fold
            head = copy.deepcopy(model.value_head)
            other = np.nonzero(fold != k)[0]
            optimiser = torch.optim.Adam(head.parameters(), lr=ppo.value_lr)
            x, y = features[other], torch.from_numpy(mc_returns[other])
            rng = np.random.default_rng(k)
            for _ in range(ppo.value_steps * 4):
                rows = torch.from_numpy(rng.choice(len(other), min(ppo.value_minibatch_size, len(other)), replace=False))
                optimiser.zero_grad()
                torch.nn.functional.mse_loss(head(x[rows]).squeeze(-1), y[rows]).backward()
                optimiser.step()
            mine = np.nonzero(fold == k)[0]
            with torch.no_grad():
                values[mine] = head(features[mine]).squeeze(-1).numpy()
        next_values = next_state_values(values, d)
        estimators = {"gae": gae(d.rewards, values, next_values, d.discounts, d.terminal, d.episode, ppo.gae_lambda)[0]}
        for lam in lambdas:  # shorter credit assignment: less of the later decisions' noise in each advantage
            estimators[f"gae_lambda_{lam:g}"] = gae(d.rewards, values, next_values, d.discounts, d.terminal,
                                                     d.episode, lam)[0]
        if args.paired:
            # REINFORCE on the episode's discounted return from its start, with two baselines: the
            # cross-fitted value of its first state, and the return of its pair (the same layout, other
            # noise: independent of this episode's actions, so unbiased)
            first = np.asarray([np.nonzero(d.episode == i)[0][0] for i in range(len(keep))])
            start_return = mc_returns[first]
            partner = np.arange(len(keep)) ^ 1
            estimators["return_minus_value"] = (start_return - values[first])[d.episode]
            estimators["return_minus_pair"] = (start_return - start_return[partner])[d.episode]
        row = {"decisions": len(d), "episodes_with_decisions": len(keep),
               "rewarded_episodes": int(sum(terminal[i] for i in keep)),
               "value_explained_variance": float(1 - np.var(mc_returns - values) / max(np.var(mc_returns), 1e-12)),
               "estimators": {}}
        for estimator, raw in estimators.items():
            adv = loss_advantages(raw.astype(np.float32), ppo)
            grads = np.zeros((len(keep), size), np.float32)
            residuals = []
            model.train()
            for i in range(len(keep)):
                rows = np.nonzero(d.episode == i)[0]
                images, joints, text, actions, mask = tensors(d, rows, encoder.encode)
                model.zero_grad(set_to_none=True)
                outputs = model.forward_normalised(images, joints, text)
                log_prob, _, _ = chunk_log_prob(model, images, joints, text, actions, mask, outputs=outputs,
                                                exploration=args.explore_noise)
                (torch.from_numpy(adv[rows]) * log_prob).sum().backward()
                grads[i] = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1)
                                      for p in trained]).numpy()
                with torch.no_grad():  # the executed actions as this model's draws: N(0, 1) if the log-probs are right
                    z = (model.normalise_target(actions, joints) - outputs[0]) / outputs[1].exp()
                    residuals.append(z[mask.bool()].reshape(-1).numpy())
            model.eval()
            z = np.concatenate(residuals)
            row["executed_residual_mean_std"] = [float(z.mean()), float(z.std())]
            if args.paired:  # a pair's episodes share a layout (and a baseline): their summed gradient is the unit
                grads = grads[0::2] + grads[1::2]
            scales = {}
            for group, columns in groups.items():
                g = grads[:, columns].astype(np.float64)
                gram = g @ g.T
                scales[group] = resolve({**noise_scale(gram), **jackknife(gram)}, 2 if args.paired else 1)
            # one action bias per task (a parameterisation with 4 x chunk dimensions): an episode's
            # gradient is its bias gradient in its own task's block, so episodes of two tasks are orthogonal
            g = grads[:, groups["action_bias"]].astype(np.float64)
            unit_tasks = np.asarray([episodes[keep[i]].meta.instruction for i in range(len(keep))])[::2 if args.paired else 1]
            gram = (g @ g.T) * (unit_tasks[:, None] == unit_tasks[None, :])
            scales["action_bias_per_task"] = resolve({**noise_scale(gram), **jackknife(gram)}, 2 if args.paired else 1)
            del grads
            row["estimators"][estimator] = {"groups": scales}
        row["groups"] = row["estimators"]["gae"]["groups"]  # the learner's estimator, as before --paired
        report["rewards"][name] = row
        print(name, json.dumps(row, default=float), flush=True)
    report["wall_s"] = time.time() - t_start
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
