"""The learner: PPO maths on chunk decisions, staleness, human steps, and the whole asynchronous loop
(a simulated robot sends episodes over CurveZMQ, the learner updates and the robot swaps the weights in)."""

import threading

import numpy as np
import pytest
import torch

from robot_rl.data.episodes import list_episodes
from robot_rl.learn.actor import SimActor
from robot_rl.learn.bc import shift_frames
from robot_rl.learn.learner import Learner, LearnerConfig, load_start_policy, state_bytes
from robot_rl.learn.ppo import PPOConfig, anchor_kl, chunk_log_prob, episode_decisions, evaluate_rows, gae, tensors
from robot_rl.paths import data_path
from robot_rl.policy.base import PolicyConfig, make_policy
from robot_rl.transport.links import EpisodeUplink, WeightsListener
from robot_rl.transport.security import ClientKeys, generate_keypair
from robot_rl.transport.spool import Spool
from tests.transport.test_links import make_episode, wait_for


def test_decisions_group_executed_chunk_points_and_skip_human_steps():
    # steps: chunk from obs 0 (points 0,1), chunk from obs 2 (point 0), a human step, a hold, chunk from obs 5
    e = make_episode(0, length=7, policy_version=np.array([3, 3, 3, -1, -1, 4, 4], np.float32),
                     obs_step=np.array([0, 0, 2, -1, -1, 5, 5], np.float32),
                     chunk_step=np.array([0, 1, 0, -1, -1, 0, 1], np.float32))
    e.intervention[3] = True
    rewards = np.array([1, 2, 4, 8, 16, 32, 64], np.float32)
    d = episode_decisions(e, rewards, horizon=4, gamma=0.5)
    assert [(x["obs"], x["version"], x["mask"].tolist()) for x in d] == [
        (0, 3, [True, True, False, False]), (2, 3, [True, False, False, False]), (5, 4, [True, True, False, False])]
    assert np.allclose(d[0]["actions"][:2], e.actions[:2]) and not d[1]["actions"][1:].any()
    # rewards: own steps discounted from the decision's first step. The human's take-over at step 3 ends
    # the chunk from obs 2: the human's progress (8) and the hold after it (16) are credited to no
    # decision, and the interrupted decision does not bootstrap (discount 0)
    assert [x["reward"] for x in d] == [1 + 0.5 * 2, 4, 32 + 0.5 * 64]
    assert [x["discount"] for x in d] == [0.5 ** 2, 0.0, 0.5 ** 2]
    penalised = episode_decisions(e, rewards, horizon=4, gamma=0.5, intervention_penalty=1.5)
    assert [x["reward"] for x in penalised] == [2, 4 - 1.5, 64]
    # a hold without a human still counts for the chunk before it
    e.intervention[3] = False
    assert [x["reward"] for x in episode_decisions(e, rewards, 4, 0.5)][1] == 4 + 0.5 * 8 + 0.25 * 16
    e.intervention[3] = True
    assert episode_decisions(e, rewards, 4, 0.5, end=5)[-1]["obs"] == 2  # the critic's done at step 5 ends it


def test_gae_matches_a_hand_computation_and_stops_at_episode_boundaries():
    rewards = np.array([1.0, 0.0, 2.0, 5.0], np.float32)
    values = np.array([0.5, 0.2, 0.1, 1.0], np.float32)
    next_values = np.array([0.2, 0.1, 0.0, 0.7], np.float32)  # row 2 ends episode 0 (terminal), row 3 is cut
    discounts = np.full(4, 0.9, np.float32)
    terminal = np.array([False, False, True, False])
    episode = np.array([0, 0, 0, 1])
    adv, ret = gae(rewards, values, next_values, discounts, terminal, episode, lam=0.5)
    d2 = 2.0 - 0.1
    d1 = 0.0 + 0.9 * 0.1 - 0.2
    d0 = 1.0 + 0.9 * 0.2 - 0.5
    a1 = d1 + 0.9 * 0.5 * d2
    assert np.allclose(adv, [d0 + 0.9 * 0.5 * a1, a1, d2, 5.0 + 0.9 * 0.7 - 1.0], atol=1e-6)
    assert np.allclose(ret, adv + values)


@pytest.fixture
def learner_keys(tmp_path):
    keys = tmp_path / "keys"
    generate_keypair(keys, "learner")
    generate_keypair(keys, "robot1")
    (keys / "allowed").mkdir()
    (keys / "allowed" / "robot1.key").write_bytes((keys / "robot1.key").read_bytes())
    return keys


def learner_config(tmp_path, tiny_export, tiny_critic, keys, **overrides) -> LearnerConfig:
    return LearnerConfig.from_dict({
        "run_dir": str(tmp_path / "run"), "policy": str(tiny_export), "critic": str(tiny_critic),
        "episodes_per_update": 2, "bind_episodes": "tcp://127.0.0.1:*", "bind_weights": "tcp://127.0.0.1:*",
        "secret_key": str(keys / "learner.key_secret"), "allowed_keys": str(keys / "allowed"), "tensorboard": False,
        "ppo": {"epochs": 2, "minibatch_size": 16, "lr": 1e-3}, **overrides})


def sim_episodes(tiny_export, n, version=0, seed=0, explore_noise="step", explore=True, execute_steps=1):
    policy = make_policy(PolicyConfig(type="vla", options={"path": str(tiny_export), "backend": "torch", "explore": explore,
                                                           "explore_seed": seed, "explore_noise": explore_noise}))
    policy.version_number = version
    actor = SimActor(policy, ["front", "wrist"], 32, 24, execute_steps=execute_steps)
    try:
        return [actor.episode("reach_cube", seed + i, max_steps=12) for i in range(n)]
    finally:
        actor.close()


def move_to_version_one(learner: Learner, scale: float, seed: int | None = 0) -> None:
    """Version 1: the action head moved by ``scale`` x noise since version 0 acted (as updates move it)."""
    if seed is not None:
        torch.manual_seed(seed)
    with torch.no_grad():
        for p in learner.model.action_head.parameters():
            p.add_(scale * torch.randn_like(p))
    learner.version = 1
    learner.versions.add(1, learner.model.state_dict())


def test_behaviour_log_probs_are_recomputed_so_the_first_ratio_is_one(tmp_path, tiny_export, tiny_critic, learner_keys):
    learner = Learner(learner_config(tmp_path, tiny_export, tiny_critic, learner_keys), log_fn=lambda *_: None)
    d, _ = learner.prepare(sim_episodes(tiny_export, 2))
    assert len(d) > 10 and set(d.version.tolist()) == {0}
    learner.behaviour.load_state_dict(learner.versions.get(0))
    old, _ = evaluate_rows(learner.behaviour, d, learner._embed)
    new, _ = evaluate_rows(learner.model, d, learner._embed)
    assert np.allclose(old, new, atol=1e-5) and np.all(np.isfinite(old))
    row = learner.update(sim_episodes(tiny_export, 2, seed=5))
    assert row["version"] == 1 and row["batch_decisions"] > 10 and np.isfinite(row["policy_loss"])
    assert not torch.equal(learner.versions.get(0)["action_head.weight"], learner.model.state_dict()["action_head.weight"])
    learner.close()



def test_the_learner_counts_whether_the_critics_done_saw_the_reported_successes(tmp_path, tiny_export, tiny_critic,
                                                                                learner_keys):
    """A reward that never sees the successes teaches nothing; the counters make that visible."""
    learner = Learner(learner_config(tmp_path, tiny_export, tiny_critic, learner_keys, reward_from="episode"),
                      log_fn=lambda *_: None)
    episodes = sim_episodes(tiny_export, 4)
    for i, e in enumerate(episodes):
        e.extras["reward"] = np.zeros(len(e), np.float32)
        e.meta.success = i < 3  # three successes reported (in sim: ground truth) ...
        e.meta.extra["critic_done"] = i in (0, 3)  # ... one of which the done saw, and one false alarm
    learner.prepare(episodes)
    c = learner.counters
    assert (c["reported_successes"], c["critic_done_on_success"], c["critic_done_on_failure"]) == (3, 1, 1)
    learner.close()

@pytest.mark.parametrize("decoupled", [True, False])
def test_decoupled_ratio_starts_at_one_for_episodes_of_the_previous_version(tmp_path, tiny_export, tiny_critic,
                                                                           learner_keys, decoupled):
    """An episode acted by the previous version: against the proximal policy (decoupled) its ratio is 1
    until the update moves, and the behaviour difference goes into a truncated weight; against the
    behaviour (coupled) it starts clipped, which is what stopped every benchmark update early."""
    ppo = {"epochs": 1, "minibatch_size": 256, "lr": 0.0, "decoupled": decoupled, "max_behaviour_weight": 1.5}
    learner = Learner(learner_config(tmp_path, tiny_export, tiny_critic, learner_keys, ppo=ppo), log_fn=lambda *_: None)
    episodes = sim_episodes(tiny_export, 2)  # acted by version 0
    move_to_version_one(learner, 0.2, seed=None)  # the weights moved since those episodes were acted
    row = learner.update(episodes)
    assert row["batch_decisions"] > 10
    if decoupled:
        assert row["clip_fraction"] == 0.0 and row["approx_kl"] < 1e-6
        assert 0.0 < row["behaviour_weight"] <= 1.5 and row["behaviour_weight"] != 1.0
    else:
        assert row["clip_fraction"] > 0.3 and row["approx_kl"] > 0.05
        assert row["behaviour_weight"] == 1.0
    learner.close()


def test_the_per_dimension_ratio_clips_and_limits_each_dimension_not_the_whole_chunk(tmp_path, tiny_export, tiny_critic,
                                                                                    learner_keys):
    """The same moved weights seen through the chunk ratio and through the per-dimension ratio: the
    chunk's log-ratio sums every executed dimension, so its KL and clip fraction are larger."""
    episodes = sim_episodes(tiny_export, 2)  # acted by version 0
    rows = {}
    for per_dimension in (False, True):
        ppo = {"epochs": 1, "minibatch_size": 256, "lr": 0.0, "ratio_per_dimension": per_dimension}
        learner = Learner(learner_config(tmp_path / str(per_dimension), tiny_export, tiny_critic, learner_keys, ppo=ppo),
                          log_fn=lambda *_: None)
        move_to_version_one(learner, 0.02)
        rows[per_dimension] = learner.update(episodes)
        learner.close()
    chunk, per_dim = rows[False], rows[True]
    assert chunk["batch_decisions"] == per_dim["batch_decisions"] > 10
    assert chunk["approx_kl"] > 0.05 and 0.0 < per_dim["approx_kl"] < chunk["approx_kl"] / 4
    assert per_dim["clip_fraction"] < chunk["clip_fraction"] / 2  # measured 0.14 against 0.77


def test_chunk_noise_moves_every_point_by_one_draw_and_is_scored_as_that_draw(tmp_path, tiny_export, tiny_critic,
                                                                             learner_keys):
    """``explore_noise: chunk`` moves each executed point by the same number of its own standard
    deviations; the learner's ``chunk`` log-probability is the exact density of that P-dimensional
    draw under the weights that acted, so the first ratio is 1 and the chunk ratio has P dimensions."""
    learner = Learner(learner_config(tmp_path, tiny_export, tiny_critic, learner_keys, ppo={"exploration": "chunk"}),
                      log_fn=lambda *_: None)
    episodes = sim_episodes(tiny_export, 2, explore_noise="chunk", execute_steps=4)
    assert {e.meta.extra["exploration"] for e in episodes} == {"chunk"}
    d, _ = learner.prepare(episodes)
    assert len(d) >= 4 and learner.counters["dropped_exploration"] == 0 and d.mask.sum(-1).max() == 4
    images, joints, text, actions, mask = tensors(d, np.arange(len(d)), learner._embed)
    with torch.no_grad():
        mean, log_std, _ = learner.model.forward_normalised(images, joints, text)
        z = (learner.model.normalise_target(actions, joints) - mean) / log_std.exp()  # (N, H, P)
        log_prob, _, _ = chunk_log_prob(learner.model, images, joints, text, actions, mask, exploration="chunk")
        step_log_prob, _, _ = chunk_log_prob(learner.model, images, joints, text, actions, mask)
    for i in range(len(d)):
        executed = z[i][mask[i].bool()]  # (points, P): one draw, the same at every executed point
        assert torch.allclose(executed, executed[:1].expand_as(executed), atol=1e-3)
        draw, points = executed[0], mask[i].bool()
        expected = torch.distributions.Normal(0.0, 1.0).log_prob(draw).sum() - log_std[i][points].mean(0).sum()
        assert torch.isclose(log_prob[i], expected, atol=1e-4)
    assert not torch.allclose(log_prob, step_log_prob)  # the same chunks scored as independent points differ
    # weights moved since the episodes were acted: the P-dimensional ratio moves far less than the
    # chunk's 4 x P one under step noise (the same move, the same episodes, scored both ways)
    rows = {}
    for noise in ("chunk", "step"):
        cfg = learner_config(tmp_path / noise, tiny_export, tiny_critic, learner_keys,
                             ppo={"epochs": 1, "minibatch_size": 256, "lr": 0.0, "exploration": noise})
        moved = Learner(cfg, log_fn=lambda *_: None)
        move_to_version_one(moved, 0.02)
        for e in episodes:
            e.meta.extra["exploration"] = noise
        rows[noise] = moved.update(episodes)
        moved.close()
    assert 0.0 < rows["chunk"]["approx_kl"] < rows["step"]["approx_kl"] / 2
    learner.close()


def test_episodes_explored_with_other_noise_than_the_learner_scores_are_dropped(tmp_path, tiny_export, tiny_critic,
                                                                               learner_keys):
    logged = []
    learner = Learner(learner_config(tmp_path, tiny_export, tiny_critic, learner_keys, ppo={"exploration": "chunk"}),
                      log_fn=logged.append)
    step_noise = sim_episodes(tiny_export, 2)  # the policy's default: step
    not_exploring = sim_episodes(tiny_export, 1, seed=7, explore=False)
    assert [e.meta.extra["exploration"] for e in step_noise + not_exploring] == ["step", "step", None]
    d, _ = learner.prepare(step_noise + not_exploring)
    assert learner.counters["dropped_exploration"] == 2 and set(d.episode.tolist()) == {0}
    assert any("explored with 'step' noise" in line and "ppo.exploration is 'chunk'" in line for line in logged), logged
    learner.close()
    with pytest.raises(ValueError, match=r"ppo.exploration 'pink': expected one of \('step', 'chunk'\)"):
        PPOConfig(exploration="pink")
    with pytest.raises(ValueError, match=r"explore_noise 'pink': expected one of"):
        make_policy(PolicyConfig(type="vla", options={"path": str(tiny_export), "explore_noise": "pink"}))


def test_the_demo_phase_fits_the_demonstrations_whatever_the_kl_limit(tmp_path, tiny_export, tiny_critic, learner_keys):
    ppo = {"demo_steps": 60, "demo_lr": 1e-3, "target_kl": 1e-9, "demo_coef": 0.1, "max_staleness": 5, "demo_shift_pad": 0}
    learner = Learner(learner_config(tmp_path, tiny_export, tiny_critic, learner_keys, ppo=ppo,
                                     hil={"demo_replay": True, "human_guided": True}), log_fn=lambda *_: None)
    episodes = sim_episodes(tiny_export, 4)
    for e in episodes:
        e.intervention[2:8] = True  # the human's steps: the demonstrations here
    before = learner.update(episodes[:1])["demo_phase_nll"]
    for e in episodes[1:]:
        row = learner.update([e])
    assert learner.demos.added_human == sum(int(e.intervention.sum()) for e in episodes) > 10
    assert row["stopped_early"] == 1.0
    assert row["demo_phase_nll"] < 0.8 * before, (before, row["demo_phase_nll"])
    learner.close()


def test_the_demos_teach_the_mean_and_leave_the_exploration_noise_to_rl(tmp_path, tiny_export, tiny_critic, learner_keys):
    # PPO at lr 0 moves nothing: whatever changes comes from the demo phase (augmented, as train-bc)
    ppo = {"demo_steps": 20, "demo_lr": 1e-3, "lr": 0.0, "demo_coef": 0.0, "demo_shift_pad": 2, "max_staleness": 5}
    learner = Learner(learner_config(tmp_path, tiny_export, tiny_critic, learner_keys, ppo=ppo,
                                     hil={"demo_replay": True, "human_guided": True}), log_fn=lambda *_: None)
    log_std = learner.model.log_std.detach().clone()
    weights = {k: v.clone() for k, v in learner.model.state_dict().items()}
    episodes = sim_episodes(tiny_export, 3)
    for e in episodes:
        e.intervention[2:10] = True
    for e in episodes:
        assert learner.update([e])["demo_phase_nll"] != 0.0  # the phase ran (0.0: nothing to fit)
    assert torch.equal(learner.model.log_std.detach(), log_std)
    moved = [k for k, v in learner.model.state_dict().items() if not torch.equal(v, weights[k])]
    assert any("action_head" in k for k in moved) and any("trunk" in k for k in moved), moved
    learner.close()


def test_frozen_image_encoders_stay_as_loaded_while_the_rest_learns(tmp_path, tiny_export, tiny_critic, learner_keys):
    ppo = {"train_image_encoders": False, "lr": 1e-3, "demo_steps": 5, "demo_lr": 1e-3, "max_staleness": 5}
    learner = Learner(learner_config(tmp_path, tiny_export, tiny_critic, learner_keys, ppo=ppo,
                                     hil={"demo_replay": True, "human_guided": True}), log_fn=lambda *_: None)
    before = {k: v.clone() for k, v in learner.model.state_dict().items()}
    episodes = sim_episodes(tiny_export, 2)
    episodes[1].intervention[2:8] = True
    learner.update(episodes)
    after = learner.model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert not [k for k in changed if k.startswith("encoders.")], changed
    assert any(k.startswith("trunk.") for k in changed) and any(k.startswith("action_head.") for k in changed)
    learner.close()


def test_the_value_fit_learns_the_returns_and_leaves_the_policy_alone(tmp_path, tiny_export, tiny_critic, learner_keys):
    """ppo.py section 7: with the PPO step at lr 0, only the value head moves, its loss on the window's
    returns falls, and the fit's optimiser is checkpointed with the rest."""
    ppo = {"lr": 0.0, "value_steps": 60, "value_lr": 1e-2, "value_window": 2, "value_minibatch_size": 16}
    learner = Learner(learner_config(tmp_path, tiny_export, tiny_critic, learner_keys, ppo=ppo), log_fn=lambda *_: None)
    before = {k: v.clone() for k, v in learner.model.state_dict().items()}
    row = learner.update(sim_episodes(tiny_export, 2))
    assert -10.0 < row["value_explained_variance"] <= 1.0
    assert row["value_fit_rows"] == row["batch_decisions"]
    assert row["value_fit_loss_after"] < 0.5 * row["value_fit_loss_before"]
    changed = {k for k, v in learner.model.state_dict().items() if not torch.equal(before[k], v)}
    assert changed == {"value_head.weight", "value_head.bias"}
    row = learner.update(sim_episodes(tiny_export, 2, seed=7))  # the window now holds both batches
    assert row["value_fit_rows"] > row["batch_decisions"]
    learner.checkpoint()
    assert torch.load(learner.checkpoint_path, weights_only=False)["value_optimiser"]["state"]
    learner.close()


def test_the_anchor_kl_is_the_gaussians_closed_form_over_the_executed_points():
    torch.manual_seed(0)
    mean, ref_mean = torch.randn(3, 4, 2), torch.randn(3, 4, 2)
    log_std, ref_log_std = 0.3 * torch.randn(3, 4, 2), 0.3 * torch.randn(3, 4, 2)
    mask = torch.tensor([[1, 1, 0, 0], [1, 0, 0, 0], [1, 1, 1, 1]], dtype=torch.float32)
    per_dim = torch.distributions.kl_divergence(torch.distributions.Normal(mean, log_std.exp()),
                                                torch.distributions.Normal(ref_mean, ref_log_std.exp()))
    expected = torch.stack([per_dim[i, mask[i].bool()].mean() for i in range(3)]).mean()
    assert torch.allclose(anchor_kl(mean, log_std, ref_mean, ref_log_std, mask), expected, atol=1e-6)
    assert anchor_kl(mean, log_std, mean, log_std, mask).abs() < 1e-6
    with pytest.raises(ValueError, match=r"ppo.anchor_coef -1.0: expected 0 \(off\) or a positive weight"):
        PPOConfig(anchor_coef=-1.0)


def test_the_anchor_pulls_the_policy_back_towards_the_starting_policy(tmp_path, tiny_export, tiny_critic, learner_keys):
    """ppo.py section 8. Weights moved away from the start (as 40 noisy updates move them), then one
    update without the KL limit: anchored, the policy ends closer to the starting policy than it began
    and than the same update unanchored leaves it."""
    episodes = sim_episodes(tiny_export, 2)
    start, _ = load_start_policy(str(tiny_export))
    result = {}
    for coef in (0.0, 5.0):
        ppo = {"epochs": 4, "minibatch_size": 16, "lr": 1e-3, "target_kl": 0.0, "value_steps": 0, "anchor_coef": coef}
        learner = Learner(learner_config(tmp_path / str(coef), tiny_export, tiny_critic, learner_keys, ppo=ppo),
                          log_fn=lambda *_: None)
        assert (learner.reference is not None) == (coef > 0)
        move_to_version_one(learner, 0.05)
        d, _ = learner.prepare(episodes)

        def kl_to_start():
            with torch.no_grad():
                images, joints, text, _, mask = tensors(d, np.arange(len(d)), learner._embed)
                now, then = learner.model.forward_normalised(images, joints, text), start.forward_normalised(images, joints, text)
                return anchor_kl(now[0], now[1], then[0], then[1], mask).item()

        before = kl_to_start()
        row = learner.update(episodes)
        result[coef] = (before, kl_to_start(), row)
        learner.close()
    (before_free, after_free, free), (before_held, after_held, held) = result[0.0], result[5.0]
    assert before_free == pytest.approx(before_held) and before_held > 0.01
    assert free["anchor_kl"] == 0.0 and held["anchor_kl"] > 0.0  # reported only where it is in the loss
    assert after_held < 0.5 * before_held and after_held < after_free, result


def test_stale_episodes_are_dropped_and_human_steps_feed_the_demo_buffer(tmp_path, tiny_export, tiny_critic, learner_keys):
    cfg = learner_config(tmp_path, tiny_export, tiny_critic, learner_keys, ppo={"max_staleness": 1})
    learner = Learner(cfg, log_fn=lambda *_: None)
    fresh, stale = sim_episodes(tiny_export, 2)
    learner.version = 2
    learner.versions.add(2, learner.model.state_dict())
    for e in (fresh, stale):
        e.extras["policy_version"][:] = 2
    stale.extras["policy_version"][:] = 0  # acted by version 0, two versions ago
    fresh.intervention[3:6] = True  # a human took over for three steps
    d, _ = learner.prepare([fresh, stale])
    assert learner.counters["dropped_stale"] == 1 and set(d.episode.tolist()) == {0}
    assert learner.demos.added_human == 3 and len(learner.demos) == 3
    # every step the policy commanded is in exactly one decision; the human's three are in none
    assert d.mask.sum() == len(fresh) - 3
    # a batch with nothing the policy decided publishes no version, and says so
    logged = []
    learner.log = logged.append
    assert learner.update([stale]) is None
    assert learner.version == 2 and learner.counters["skipped_batches"] == 1
    assert any("no policy decision to learn from" in line for line in logged), logged
    learner.close()


def test_the_asynchronous_loop_over_zeromq_with_a_restart(tmp_path, tiny_export, tiny_critic, learner_keys):
    cfg = learner_config(tmp_path, tiny_export, tiny_critic, learner_keys)
    learner = Learner(cfg, log_fn=lambda *_: None)
    server = threading.Thread(target=learner.serve, kwargs={"max_updates": 2, "progress": False}, daemon=True)
    server.start()
    wait_for(lambda: learner.inbox is not None and learner.publisher is not None, what="learner up")
    client = ClientKeys(str(learner_keys / "robot1.key_secret"), str(learner_keys / "learner.key"))
    robot_policy = make_policy(PolicyConfig(type="vla", options={"path": str(tiny_export), "backend": "onnxruntime"}))
    listener = WeightsListener(learner.publisher.address, client,
                               lambda v, c, b: robot_policy.load_weights(v, c, b, workdir=str(tmp_path / "robot_weights")))
    spool = Spool(tmp_path / "spool")
    uplink = EpisodeUplink(spool, learner.inbox.address, client, "robot1").start()
    try:
        for e in sim_episodes(tiny_export, 4):
            spool.put(e)
        uplink.notify()
        server.join(120)
        assert not server.is_alive() and learner.updates == 2
        wait_for(lambda: robot_policy.version_number == 2, what="the robot running version 2")
        assert robot_policy.version.endswith("+learner-v2") and len(spool) == 0
        assert (tmp_path / "run" / "weights" / "v2.safetensors").is_file()
        assert len(list_episodes(tmp_path / "run" / "episodes")) == 4  # used by checkpointed updates
        rows = [r for r in learner.history]
        assert [r["version"] for r in rows] == [1, 2] and all(r["publish_ms"] is not None for r in rows)
    finally:
        uplink.close()
        listener.close()
    # a restart resumes version, optimiser and counters from the checkpoint
    again = Learner(cfg, log_fn=lambda *_: None)
    assert again.version == 2 and again.counters["episodes"] == 4 and 1 in again.versions and 2 in again.versions
    assert torch.equal(again.model.state_dict()["action_head.weight"], learner.model.state_dict()["action_head.weight"])
    again.close()


def test_an_export_older_than_a_config_field_still_takes_the_learners_weights(tiny_export, tmp_path):
    """Exports written before a VLA config field existed (the shipped default lacks ``pooling``) load
    the weights of a learner whose config has it, and mean the field's default."""
    import dataclasses
    import json
    import shutil

    from robot_rl.policy.vla import VLAConfig
    from robot_rl.transport.messages import LATER_FIELDS

    defaults = {f.name: f.default_factory() if f.default is dataclasses.MISSING else f.default
                for f in dataclasses.fields(VLAConfig)}
    assert LATER_FIELDS == {k: defaults[k] for k in LATER_FIELDS}
    # every field that the shipped default's (older) metadata lacks must be one of them: a field added
    # without it makes every earlier export refuse the learner's weights
    shipped = json.loads(data_path("policies", "sim_default", "metadata.json").read_text())["model_config"]
    assert set(defaults) - set(shipped) <= set(LATER_FIELDS), sorted(set(defaults) - set(shipped) - set(LATER_FIELDS))
    old = tmp_path / "old_export"
    shutil.copytree(tiny_export, old)
    meta = json.loads((old / "metadata.json").read_text())
    for field in LATER_FIELDS:
        meta["model_config"].pop(field, None)
    (old / "metadata.json").write_text(json.dumps(meta))
    policy = make_policy(PolicyConfig(type="vla", options={"path": str(old), "backend": "torch"}))
    model, _ = load_start_policy(str(tiny_export))
    assert "pooling" in model.config.to_dict()
    policy.load_weights(3, model.config.to_dict(), state_bytes(model), workdir=str(tmp_path / "w"))
    assert policy.version_number == 3
    other = dataclasses.replace(model.config, pooling="spatial_softmax")  # a real change is still refused
    with pytest.raises(ValueError, match="another architecture"):
        policy.load_weights(4, other.to_dict(), state_bytes(model))


def test_weights_for_another_architecture_are_refused_and_the_policy_keeps_running(tiny_export):
    policy = make_policy(PolicyConfig(type="vla", options={"path": "policies/sim_default", "backend": "torch"}))
    tiny, _ = load_start_policy(str(tiny_export))
    with pytest.raises(ValueError, match="another architecture"):
        policy.load_weights(1, tiny.config.to_dict(), state_bytes(tiny))
    with pytest.raises(ValueError, match="not a valid safetensors"):
        model, _ = load_start_policy("policies/sim_default")
        policy.load_weights(1, model.config.to_dict(), b"garbage")
    assert policy.version_number == 0


def test_a_human_share_outside_zero_to_one_is_refused_with_its_field():
    with pytest.raises(ValueError, match=r"ppo.demo_human_fraction 1.5: expected a share between 0 and 1"):
        PPOConfig(demo_human_fraction=1.5)


def test_the_object_loss_keeps_teaching_the_encoder_where_things_are_and_resumes(tmp_path, tiny_export, tiny_critic,
                                                                                learner_keys, tiny_demos):
    """ppo.objects_coef: a head fitted on the demonstrations' object positions before the first update,
    whose loss in the demo phase reaches the image encoders; it is checkpointed, never published."""
    ppo = {"demo_steps": 30, "demo_lr": 1e-3, "lr": 0.0, "demo_coef": 0.0, "demo_shift_pad": 0, "max_staleness": 5}
    hil = {"demo_replay": True, "human_guided": True}
    episodes = sim_episodes(tiny_export, 2)
    encoders = {}
    for coef in (0.0, 10.0):
        logged = []
        learner = Learner(learner_config(tmp_path / str(coef), tiny_export, tiny_critic, learner_keys, demos=str(tiny_demos),
                                         ppo={**ppo, "objects_coef": coef}, hil=hil), log_fn=logged.append)
        assert (learner.object_head is None) == (coef == 0.0)
        if coef:
            fitted = next(line for line in logged if line.startswith("object head: fitted"))
            rows = learner.demos.object_rows()
            assert len(rows) == learner.demos.pinned > 20 and f"on {len(rows)} demo rows" in fitted
            head = learner.object_head

            def error_mm():
                with torch.no_grad():
                    seen = learner.model.image_features({c: torch.from_numpy(learner.demos.images[c][rows])
                                                         for c in learner.model.config.cameras})
                    return head.loss(seen, torch.from_numpy(learner.demos.objects[rows]))[1]
            before = error_mm()
        row = learner.update(episodes)
        assert ("demo_phase_objects_mm" in row) == bool(coef) and row["demo_phase_nll"] > 0.0
        encoders[coef] = {k: v.clone() for k, v in learner.model.state_dict().items() if k.startswith("encoders.")}
        if coef:
            assert error_mm() < 0.9 * before, (before, error_mm())
            learner.checkpoint()
            weights = learner.object_head.state_dict()
            learner.close()
            again = Learner(learner_config(tmp_path / str(coef), tiny_export, tiny_critic, learner_keys, demos=str(tiny_demos),
                                           ppo={**ppo, "objects_coef": coef}, hil=hil), log_fn=lambda *_: None)
            assert all(torch.equal(v, again.object_head.state_dict()[k]) for k, v in weights.items())
            assert again.update(episodes)["demo_phase_nll"] != 0.0  # the restored head trains in the restored optimiser
            again.close()
            with pytest.raises(ValueError, match="checkpointed with|without the object head"):
                Learner(learner_config(tmp_path / "0.0", tiny_export, tiny_critic, learner_keys, demos=str(tiny_demos),
                                       ppo={**ppo, "objects_coef": coef}, hil=hil), log_fn=lambda *_: None)
        else:
            learner.checkpoint()
            learner.close()
    # the object loss's gradient reached the camera encoders: the same update without it moved them otherwise
    assert any(not torch.equal(encoders[0.0][k], encoders[10.0][k]) for k in encoders[0.0])


def test_an_object_loss_without_object_positions_is_refused_with_its_field(tmp_path, tiny_export, tiny_critic,
                                                                          learner_keys):
    ppo = {"demo_steps": 5, "objects_coef": 1.0}
    with pytest.raises(ValueError, match=r"ppo.objects_coef 1.0: the demo buffer has no rows with 'object_positions'"):
        Learner(learner_config(tmp_path, tiny_export, tiny_critic, learner_keys, ppo=ppo,
                               hil={"demo_replay": True, "human_guided": True}), log_fn=lambda *_: None)
    with pytest.raises(ValueError, match=r"ppo.objects_coef -1"):
        PPOConfig(objects_coef=-1.0)


def test_the_object_head_is_fitted_on_the_frames_the_demo_phase_shows_it(tmp_path, tiny_export, tiny_critic,
                                                                        learner_keys, tiny_demos):
    """The demo phase shifts its frames by up to ``demo_shift_pad`` pixels: a head fitted on unshifted
    frames reads pixel positions that the shift moves, and starts the run far off (item 40 of
    docs/learning-benchmark.md: 33-37 mm where the fit said 5), so the head is fitted on shifted frames."""
    heads = {}
    for pad in (0, 4):
        learner = Learner(learner_config(tmp_path / str(pad), tiny_export, tiny_critic, learner_keys, demos=str(tiny_demos),
                                         ppo={"demo_steps": 1, "objects_coef": 1.0, "demo_shift_pad": pad},
                                         hil={"demo_replay": True}), log_fn=lambda *_: None)
        heads[pad], model, demos = learner.object_head, learner.model, learner.demos
        learner.close()
    rows = demos.object_rows()
    errors = {}
    with torch.no_grad():
        for pad, head in heads.items():
            generator = torch.Generator().manual_seed(123)  # other shifts than either fit drew
            frames = {c: torch.from_numpy(demos.images[c][rows]) for c in model.config.cameras}
            seen = model.image_features(shift_frames(frames, 4, generator))
            errors[pad] = head.loss(seen, torch.from_numpy(demos.objects[rows]))[1]
    assert errors[4] < 0.8 * errors[0], errors
