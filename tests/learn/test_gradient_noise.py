"""How much of a PPO step is signal (learn/ppo.py section 10): the per-episode gradient sums, the
pooled gradient-noise scale, and the learner reporting it without changing what it learns."""

import copy

import numpy as np
import pytest
import torch

from robot_rl.learn.learner import Learner
from robot_rl.learn.ppo import (GradientNoise, chunk_log_prob, evaluate_rows, loss_advantages, policy_parameters,
                                surrogate_gradient_sums, tensors)
from tests.learn.test_learner import learner_config, learner_keys, sim_episodes  # noqa: F401 (fixture)


def test_the_sums_are_those_of_each_episodes_surrogate_gradient(tmp_path, tiny_export, tiny_critic, learner_keys):
    learner = Learner(learner_config(tmp_path, tiny_export, tiny_critic, learner_keys), log_fn=lambda *_: None)
    d, _ = learner.prepare(sim_episodes(tiny_export, 3))
    advantages = np.random.default_rng(0).normal(size=len(d)).astype(np.float32)
    old = evaluate_rows(learner.model, d, learner._embed)[0] - 0.1  # behaviour a little off: ratios near 1
    m, sum_sq, squares = surrogate_gradient_sums(learner.model, d, advantages, old, learner.config.ppo, learner._embed)
    assert m == 3
    assert all(p.grad is None for p in learner.model.parameters())  # nothing left for the next optimiser step

    # the same gradients the plain way: backward per episode on a copy, through .grad
    model = copy.deepcopy(learner.model)
    adv = loss_advantages(advantages, learner.config.ppo)
    params = policy_parameters(model)
    assert not any(p is q for p in params for q in model.value_head.parameters())
    per_episode = []
    for e in range(m):
        rows = np.nonzero(d.episode == e)[0]
        model.zero_grad(set_to_none=True)
        log_prob, _, _ = chunk_log_prob(model, *tensors(d, rows, learner._embed))
        (torch.from_numpy(adv[rows]) * (log_prob - torch.from_numpy(old[rows])).exp()).sum().backward()
        per_episode.append(torch.cat([p.grad.reshape(-1).double() for p in params]))
    stacked = torch.stack(per_episode)
    assert sum_sq == pytest.approx(float((stacked.sum(0) ** 2).sum()), rel=1e-5)
    assert squares == pytest.approx(float((stacked ** 2).sum()), rel=1e-5)
    assert squares > 0
    learner.close()


def _feed(noise: GradientNoise, signal: np.ndarray, sigma: float, updates: int, episodes: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for _ in range(updates):
        g = signal + sigma * rng.normal(size=(episodes, len(signal)))
        noise.add(episodes, float((g.sum(0) ** 2).sum()), float((g ** 2).sum()))


def test_the_noise_scale_recovers_a_known_one_and_only_bounds_an_absent_signal():
    dims, sigma = 400, 0.5  # tr(Sigma) = 400 * 0.25 = 100
    signal = np.zeros(dims)
    signal[0] = 1.0  # |G|^2 = 1, so B = 100 episodes
    known = GradientNoise(window=400)
    _feed(known, signal, sigma, updates=400, episodes=10, seed=0)
    r = known.report(batch_episodes=10)
    assert r["gradient_noise_updates"] == 400
    assert r["gradient_signal_sq"] == pytest.approx(1.0, rel=0.2)
    assert r["gradient_noise_trace"] == pytest.approx(100.0, rel=0.05)
    assert r["gradient_noise_scale"] == pytest.approx(100.0, rel=0.25)
    assert r["gradient_noise_scale_low"] <= r["gradient_noise_scale"]
    assert r["gradient_signal_share_high"] >= 10 / (10 + 100) - 0.02

    absent = GradientNoise(window=400)  # pure noise: B is infinite, only a lower bound is known
    _feed(absent, np.zeros(dims), sigma, updates=400, episodes=10, seed=1)
    r = absent.report(batch_episodes=10)
    assert r["gradient_noise_scale"] is None
    assert 20 < r["gradient_noise_scale_low"] < np.inf
    assert r["gradient_signal_share_high"] < 0.35

    window = GradientNoise(window=3)  # only the last updates count
    _feed(window, signal, sigma, updates=10, episodes=4, seed=2)
    assert window.report(4)["gradient_noise_updates"] == 3
    one = GradientNoise(window=5)
    one.add(1, 1.0, 1.0)  # a single episode has no spread: not counted
    assert one.report(1) == {}


def test_the_learner_reports_the_scale_and_learns_exactly_what_it_learns_without_it(tmp_path, tiny_export,
                                                                                    tiny_critic, learner_keys):
    episodes = [sim_episodes(tiny_export, 2, seed=s) for s in (0, 10)]
    weights, rows = {}, {}
    for window in (0, 20):
        learner = Learner(learner_config(tmp_path / f"w{window}", tiny_export, tiny_critic, learner_keys,
                                         gradient_noise_window=window), log_fn=lambda *_: None)
        rows[window] = [learner.update(batch) for batch in episodes]
        weights[window] = {k: v.clone() for k, v in learner.model.state_dict().items()}
        learner.close()
    assert all(torch.equal(weights[0][k], weights[20][k]) for k in weights[0])
    assert not any(k.startswith("gradient_") for k in rows[0][-1])
    first, second = rows[20]
    assert first["gradient_noise_updates"] == 1 and second["gradient_noise_updates"] == 2
    assert second["gradient_noise_trace"] > 0 and second["gradient_noise_scale_low"] >= 0
    assert 0 < second["gradient_signal_share_high"] <= 1
