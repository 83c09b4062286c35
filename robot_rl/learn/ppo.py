"""PPO on action chunks, with demonstration replay: the learning maths of the learner, top to bottom.

1. What one decision is
   The policy acts in chunks: from the observation of step d it proposes H joint targets, of which
   the robot executes some (the safety layer drops points whose time passed; a newer chunk takes
   over). A *decision* is one chunk as executed: the observation it was computed from (``obs_step``),
   the executed targets at chunk positions ``chunk_step`` (a mask over the H positions), the version
   of the weights that produced it, and the rewards of the control steps until the next decision.
   The episode format carries all of it per step (``docs/episode-format.md``: ``policy_version``,
   ``obs_step``, ``chunk_step``, ``reward``); steps a human commanded (``intervention``) and holds
   are not decisions.

2. Log-probabilities, recomputed
   The policy is a diagonal Gaussian over the normalised chunk, so the log-probability of a decision
   is the sum over its executed positions of the per-position log densities. The behaviour
   log-probability is recomputed here from the stored weights of the version that acted, never
   taken from the robot: VLAC found that an inference engine's numbers differ enough from the
   trainer's to break the ratio's clipping. Recomputed, a decision of the current version has a ratio
   of exactly 1 before the first gradient step.

3. Staleness, and the proximal policy
   A decision acted by version v is used while ``current - v <= max_staleness``; older episodes are
   dropped whole and counted (``dropped_stale``). With ``decoupled`` (off by default: measured, see
   docs/learning-benchmark.md) the objective
   separates the two jobs the behaviour policy does in PPO (Hilton et al. 2022, "Batch size-invariance
   for policy optimization"): the ratio that is clipped, and whose approximate KL stops an update
   early, is taken against the *proximal* policy, the weights at the start of this update; the
   off-policy correction is a separate importance weight pi_prox / pi_behaviour, truncated at
   ``max_behaviour_weight``. Without it (``decoupled: false``) the ratio is taken against v's own
   distribution, so rows of the previous version start with ratios away from 1 and use up part of
   the clip range and the KL limit before the update has moved. (Decoupling did not make the
   benchmark learn: one Adam step at lr 3e-5 already moves the 48-dimensional chunk Gaussian by a
   KL of 0.03-0.07, so updates stop on the KL limit either way.)

4. Advantages
   GAE over the decisions of an episode, with each decision's reward the discounted sum of its
   control steps and its discount gamma ** (steps until the next decision). The critic's done ends the
   episode (terminal, no bootstrap); an episode cut by the time limit bootstraps from the value of
   its last observation. A human take-over ends the decision it interrupted: that decision gets the
   rewards of its own steps minus ``intervention_penalty`` and no bootstrap (its discount is 0), and
   the progress the human then makes is credited to no policy decision. (Crediting it to the
   interrupted chunk, as a hold's reward is, would reward exactly the actions that made the human
   step in; RLIF treats the take-over itself as the negative signal.)

5. The loss
   clipped surrogate + value_coef * value MSE - entropy_coef * entropy
   + demo_coef * NLL of demonstration chunks (the demo buffer: preloaded demonstrations and the
   steps a human commanded during RL, which never enter the PPO ratio).
   The ratio of a decision is that of its whole executed chunk (4 points x 6 joints in the
   benchmark: 24 Gaussian dimensions), so a weight change that moves each dimension a little moves
   the chunk's ratio out of the clip range, and ``target_kl`` on the chunk ends an update after one
   Adam step. ``ratio_per_dimension`` (off by default) clips and limits the geometric mean of the
   per-dimension ratios instead, exp(log_ratio / dimensions), as a language-model trainer does with
   tokens: ``clip`` and ``target_kl`` then hold per executed dimension (the chunk's KL is up to
   ``dimensions`` times larger). The surrogate's advantage is still the decision's.

6. The demonstration phase
   After the PPO epochs, ``demo_steps`` gradient steps on the demo NLL alone (learning rate
   ``demo_lr``, an optimiser of its own). The KL limit that ends the PPO epochs guards the on-policy
   surrogate; it says nothing about supervised steps towards what a human did, and with it the demo
   term got one or two small steps per update. This is the supervised half of human-guided
   exploration (DAgger with the human as the expert, as HIL-SERL's and VLAC's interventions are used):
   the corrections are learned where the policy went wrong. ``demo_human_fraction`` draws that share of
   each demo batch from the human's steps and the rest from the preloaded demonstrations (HIL-SERL and
   RLPD draw half from each buffer): with a buffer preloaded with the starting policy's own
   demonstrations, uniform draws would make the few hundred corrections a few percent of a batch, and
   a buffer of corrections alone overfits them and forgets the rest (measured,
   docs/learning-benchmark.md item 13). Demo images get the random-shift
   augmentation behaviour cloning trained with (``demo_shift_pad``), and the demo NLL (here and in
   section 5) holds the log-std fixed: demonstrations teach the mean, the exploration noise is RL's.
   With ``objects_coef`` > 0 each demo-phase step also regresses the objects' positions from the image
   features on the rows that record them (simulated demonstrations: ``object_positions``), through a
   training-only linear head the learner fits on the preloaded demonstrations before the first update
   and never publishes: the auxiliary loss that made behaviour cloning see where the cube is
   (``learn/bc.py``, docs/learning-benchmark.md item 24). Without it the supervised steps teach the
   encoder only what the chunks need on average, and the cube's position fades from its features.

7. Fitting the value
   The advantages are only as good as the value they subtract. The starting policy's value head was
   trained by behaviour cloning on the oracle's discounted success (``learn/bc.py``), which is not the
   return of this policy under this reward; and inside the PPO loss it gets the one or two Adam steps
   at ``lr`` that the KL limit leaves an update. Without a value that knows the task and the state, an
   advantage mostly says which task and which part of an episode a decision came from (reach decisions
   "good", push decisions "bad"), and the policy step follows that. With ``value_steps`` > 0 (the
   default, 200: measured better over three seeds of the learning benchmark; 0 turns it off), after
   each update the value head alone is regressed onto the returns of the last ``value_window``
   updates' decisions (computed when each was used), on the trunk's features held fixed: ``value_steps``
   minibatch steps of its own Adam at ``value_lr``. The policy is untouched (the features are
   detached, the action head and log-std get no gradient), so this costs no KL, and the features are
   computed once per fit. The report's ``value_explained_variance`` (1 - Var(returns - values) /
   Var(returns) on each update's batch, before it is used) says whether the value explains the
   returns (1: all of them; 0: no better than their mean; below 0: worse).

8. The anchor
   With ``anchor_coef`` > 0 the loss adds anchor_coef * KL(pi || pi_start) on each minibatch's
   observations: the closed-form KL of the diagonal Gaussians, per executed chunk dimension, between
   the current policy and the starting policy (the weights the learner loaded, held frozen), as
   RLHF trainers anchor to their reference model. The KL limit of section 5 bounds one update's step
   from the version that acted; nothing bounds where 40 updates of noisy advantages walk the policy
   (the learning benchmark's PPO arms drift down, items 12 and 16 of docs/learning-benchmark.md). The
   anchor pulls back what the advantage noise moves and lets stay what the advantages agree on, so
   that the larger steps of ``ratio_per_dimension`` can be taken without the collapse they caused
   unanchored. 0 (the default) turns it off and loads no second model.

9. Exploration noise, and the chunk's log-probability
   ``exploration`` must say how the exploring policy drew its chunks (``explore_noise`` of the
   ``vla`` policy; the learner drops episodes that record another, ``dropped_exploration``). With
   ``step`` (the default) every executed point and dimension was drawn independently, and the
   log-probability is section 2's sum over them. White noise at the control rate is mostly averaged
   away by a position-controlled arm, so where the episode goes says little about the noise, while
   the ratio sums 4 points x P dimensions of it. With ``chunk`` one number per dimension moved every
   point of the chunk by that many of its own standard deviations: an offset held over the chunk's
   steps, which moves the arm as far as one noisy point would but consistently. Its log-probability
   is that of a P-dimensional Gaussian over the offset: z_p = the mean over the executed points of
   (target - mean) / std, log N(z_p; 0, 1) minus the mean log-std over those points, summed over p.
   Under the weights that acted every executed point gives the same z_p, so this is the exact
   density of the draw; under other weights it is the density of the mean offset they imply (a
   projection: differences between the points' offsets are not penalised). The chunk's ratio then
   has P dimensions instead of 4 x P, and its entropy is that of the offset.
10. How much of a step is signal: the gradient-noise scale
   An update steps along the mean of its episodes' surrogate gradients g_i. With G their expectation
   and Sigma their covariance, a step of b episodes is G plus noise of total variance tr(Sigma) / b,
   so the share of its squared length that is signal is 1 / (1 + B / b), where B = tr(Sigma) / |G|^2
   is the gradient-noise scale in episodes (McCandlish et al. 2018, "An Empirical Model of
   Large-Batch Training"; episodes, not decisions, because an episode's decisions share its outcome).
   ``surrogate_gradient_sums`` takes each episode's gradient of the surrogate (advantages normalised
   as the loss normalises them, the ratio as the loss takes it, unclipped) at the weights the update
   starts from, over the policy's trained parameters, and keeps only their sum and the sum of their
   squared norms: |sum g|^2 - sum |g|^2 estimates m (m - 1) |G|^2 without bias, and
   sum |g|^2 - |sum g|^2 / m estimates (m - 1) tr(Sigma). ``GradientNoise`` pools them over a window
   of updates (G changes slowly when the steps are mostly noise) and reports B with the lower bound
   that two standard errors of |G|^2 allow; where |G|^2 is not resolved, that bound is what is known,
   and b / (b + bound) is the most of a step that can be signal. Measured on the benchmark's starting
   policies (scripts/gradient_noise.py, 200 episodes each, docs/learning-benchmark.md item 44): |G|^2
   is not resolved for any reward, simulator ground truth included; B is at least 300-450 episodes
   from ``sim_default`` and 620-750 from ``sim_cartesian_pretrained``, so an update of 5 episodes is
   at most 1.6% signal.
"""

from __future__ import annotations

import collections
import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from robot_rl.data.episodes import Episode
from robot_rl.data.recorder import NOT_POLICY
from robot_rl.learn.bc import shift_frames
from robot_rl.learn.device import model_device, to_device
from robot_rl.policy.vla import VLAModel
from robot_rl.policy.vla_policy import EXPLORATION_NOISES


@dataclass
class PPOConfig:
    gamma: float = 0.99  # per control step
    gae_lambda: float = 0.95
    clip: float = 0.2
    epochs: int = 4
    minibatch_size: int = 64
    lr: float = 3e-5
    value_coef: float = 0.5
    entropy_coef: float = 0.0
    max_grad_norm: float = 0.5
    target_kl: float = 0.05  # stop the epochs of an update early when the approximate KL passes this
    max_staleness: int = 2  # versions; older episodes are dropped
    demo_coef: float = 0.1  # weight of the demonstration NLL term (0: no demo replay)
    intervention_penalty: float = 0.0  # reward of a decision a human take-over interrupted (subtracted)
    demo_batch_size: int = 32
    demo_human_fraction: float = 0.0  # share of a demo batch drawn from the human's steps (0: uniform over the buffer)
    demo_steps: int = 0  # demo-NLL-only gradient steps after the PPO epochs of each update (section 6)
    demo_lr: float = 1e-4  # their learning rate (their own Adam)
    demo_shift_pad: int = 4  # random-shift augmentation of demo images in pixels, as behaviour cloning (0: off)
    normalise_advantages: bool = True
    decoupled: bool = False  # clip and KL against the weights at the update's start (section 3)
    max_behaviour_weight: float = 2.0  # truncation of pi_prox / pi_behaviour when decoupled
    train_image_encoders: bool = True  # false: the camera encoders stay as loaded; PPO and demos train the rest
    ratio_per_dimension: bool = False  # clip and KL-limit the per-dimension ratio of a chunk (section 5)
    value_steps: int = 200  # value-head-only regression steps after each update, on the recent window (section 7; 0: off)
    value_lr: float = 1e-3  # their learning rate (the value head's own Adam)
    value_window: int = 8  # updates whose decisions and returns the value is fitted on
    value_minibatch_size: int = 64
    anchor_coef: float = 0.0  # weight of KL(policy || starting policy) per executed dimension (section 8; 0: off)
    objects_coef: float = 0.0  # demo phase: weight of the object-position auxiliary loss (section 6; 0: off)
    exploration: str = "step"  # how the exploring policy drew its chunks: step | chunk (section 9)

    def __post_init__(self) -> None:
        if not 0.0 <= self.demo_human_fraction <= 1.0:
            raise ValueError(f"ppo.demo_human_fraction {self.demo_human_fraction}: expected a share between 0 and 1")
        if self.anchor_coef < 0:
            raise ValueError(f"ppo.anchor_coef {self.anchor_coef}: expected 0 (off) or a positive weight")
        if self.objects_coef < 0:
            raise ValueError(f"ppo.objects_coef {self.objects_coef}: expected 0 (off) or a positive weight")
        if self.exploration not in EXPLORATION_NOISES:
            raise ValueError(f"ppo.exploration {self.exploration!r}: expected one of {EXPLORATION_NOISES} "
                             "(the exploring policy's explore_noise)")


@dataclass
class Decisions:
    """Rows of decisions (chunks as executed), ready for the loss."""

    images: dict[str, np.ndarray]  # camera -> uint8 (N, H, W, 3): the observation the chunk came from
    joints: np.ndarray  # (N, J)
    instructions: list[str]  # (N,)
    actions: np.ndarray  # (N, H, J) executed absolute targets at their chunk positions (0 elsewhere)
    mask: np.ndarray  # (N, H) bool: the chunk positions that were executed
    version: np.ndarray  # (N,) int, the weights that acted
    rewards: np.ndarray  # (N,) discounted reward of the decision's control steps
    discounts: np.ndarray  # (N,) gamma ** steps to the next decision
    terminal: np.ndarray  # (N,) bool: the episode ended (critic's done) after this decision
    episode: np.ndarray  # (N,) int, index of the episode in the batch
    last_obs: dict[int, int]  # episode index -> its last step, for the bootstrap value (cut episodes only)
    episodes: list[Episode] = field(default_factory=list)  # the episodes the rows index

    def __len__(self) -> int:
        return len(self.version)


def step_arrays(episode: Episode) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(policy_version, obs_step, chunk_step) per step as ints; an episode without them (a
    demonstration) has no decisions."""
    t = len(episode)
    get = lambda k: np.rint(episode.extras[k]).astype(np.int64) if k in episode.extras else np.full(t, NOT_POLICY)
    return get("policy_version"), get("obs_step"), get("chunk_step")


def episode_decisions(episode: Episode, rewards: np.ndarray, horizon: int, gamma: float,
                      end: int | None = None, intervention_penalty: float = 0.0) -> list[dict]:
    """The decisions of one episode up to step ``end`` (exclusive; the critic's done), as dicts."""
    version, obs, chunk = step_arrays(episode)
    end = len(episode) if end is None else end
    decisions: list[dict] = []
    current = None
    for t in range(end):
        is_policy = version[t] >= 0 and 0 <= obs[t] <= t and 0 <= chunk[t] < horizon and not episode.intervention[t]
        if is_policy and (current is None or current["closed"] or current["obs"] != obs[t] or current["version"] != version[t]):
            current = {"obs": int(obs[t]), "version": int(version[t]), "first": t, "closed": False, "cut": False,
                       "actions": np.zeros((horizon, episode.actions.shape[1]), np.float32),
                       "mask": np.zeros(horizon, bool), "reward": 0.0}
            decisions.append(current)
        if current is None or current["cut"]:
            continue  # before the policy first acted, or the human's progress: no policy decision's
        if is_policy:
            current["actions"][chunk[t]] = episode.actions[t]
            current["mask"][chunk[t]] = True
        elif episode.intervention[t]:
            current["closed"] = current["cut"] = True  # a take-over ends the decision it interrupted
            current["reward"] -= intervention_penalty
            continue
        else:
            current["closed"] = True  # a hold ends the chunk; its reward still counts
        current["reward"] += gamma ** (t - current["first"]) * float(rewards[t])
    for i, d in enumerate(decisions):
        nxt = decisions[i + 1]["first"] if i + 1 < len(decisions) else end
        d["discount"] = 0.0 if d["cut"] else gamma ** (nxt - d["first"])
    return decisions


def collate(episodes: list[Episode], per_episode: list[list[dict]], terminal: list[bool]) -> Decisions:
    images = {c: [] for c in episodes[0].meta.cameras}
    joints, instructions, actions, mask, version, rewards, discounts, term, index = [], [], [], [], [], [], [], [], []
    for e_i, (episode, decisions) in enumerate(zip(episodes, per_episode)):
        for n, d in enumerate(decisions):
            for c in images:
                images[c].append(episode.images[c][d["obs"]])
            joints.append(episode.joint_positions[d["obs"]])
            instructions.append(episode.meta.instruction)
            actions.append(d["actions"])
            mask.append(d["mask"])
            version.append(d["version"])
            rewards.append(d["reward"])
            discounts.append(d["discount"])
            term.append(terminal[e_i] and n == len(decisions) - 1)
            index.append(e_i)
    last_obs = {i: len(e) - 1 for i, e in enumerate(episodes) if not terminal[i]}
    return Decisions({c: np.stack(v) for c, v in images.items()}, np.asarray(joints, np.float32), instructions,
                     np.asarray(actions, np.float32), np.asarray(mask, bool), np.asarray(version, np.int64),
                     np.asarray(rewards, np.float32), np.asarray(discounts, np.float32), np.asarray(term, bool),
                     np.asarray(index, np.int64), last_obs, list(episodes))


def gae(rewards: np.ndarray, values: np.ndarray, next_values: np.ndarray, discounts: np.ndarray,
        terminal: np.ndarray, episode: np.ndarray, lam: float) -> tuple[np.ndarray, np.ndarray]:
    """Advantages and returns over decisions (rows of one episode are contiguous, in time order).
    ``next_values[i]`` is the value after row i: the next row's, or the bootstrap at an episode's end."""
    adv = np.zeros(len(rewards), np.float32)
    last = 0.0
    for i in reversed(range(len(rewards))):
        end_of_episode = i + 1 == len(rewards) or episode[i + 1] != episode[i]
        if end_of_episode:
            last = 0.0
        keep = 0.0 if terminal[i] else 1.0
        delta = rewards[i] + discounts[i] * next_values[i] * keep - values[i]
        last = delta + discounts[i] * lam * keep * last
        adv[i] = last
    return adv, adv + values


def chunk_log_prob(model: VLAModel, images, joints, text, actions, mask, hold_std: bool = False,
                   outputs: tuple | None = None, exploration: str = "step") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(log-probability of the executed positions, value, entropy per decision); ``hold_std``: no
    gradient reaches the log-std; ``outputs``: the model's ``forward_normalised`` on these rows, when
    the caller has it already; ``exploration``: how the chunk was drawn (section 9)."""
    mean, log_std, value = outputs if outputs is not None else model.forward_normalised(images, joints, text)
    if hold_std:
        log_std = log_std.detach()
    target = model.normalise_target(actions, joints)
    half_log_2pi = 0.5 * math.log(2 * math.pi)
    if exploration == "chunk":  # section 9: the density of the chunk's offset, P dimensions
        points = mask.sum(-1, keepdim=True).clamp_min(1)  # (N, 1)
        offset = (((target - mean) / log_std.exp()) * mask[..., None]).sum(-2) / points  # (N, P)
        mean_log_std = (log_std * mask[..., None]).sum(-2) / points
        log_prob = (-0.5 * offset ** 2 - mean_log_std - half_log_2pi).sum(-1)
        entropy = (log_std.mean(-2) + 0.5 * math.log(2 * math.pi * math.e)).sum(-1)
        return log_prob, value, entropy
    per_position = -0.5 * ((target - mean) / log_std.exp()) ** 2 - log_std - half_log_2pi
    log_prob = (per_position.sum(-1) * mask).sum(-1)
    entropy = (log_std + 0.5 * math.log(2 * math.pi * math.e)).sum(dim=(-2, -1))
    return log_prob, value, entropy


def ratio_dimensions(mask: torch.Tensor, joints: int, points: int, exploration: str) -> torch.Tensor:
    """What ``ratio_per_dimension`` divides a decision's log-ratio by: executed points x joints with
    ``step`` noise (the joint count, as it always has, also for a cartesian policy's P = 5), the P
    dimensions of the offset with ``chunk`` noise (section 9)."""
    if exploration == "chunk":
        return torch.full_like(mask[:, 0], float(points))
    return (mask.sum(-1) * joints).clamp_min(1)


def anchor_kl(mean: torch.Tensor, log_std: torch.Tensor, ref_mean: torch.Tensor, ref_log_std: torch.Tensor,
              mask: torch.Tensor) -> torch.Tensor:
    """Mean KL(pi || pi_ref) per executed dimension of diagonal Gaussians over chunks (section 8):
    per dimension log(s_ref / s) + (s^2 + (m - m_ref)^2) / (2 s_ref^2) - 1/2."""
    var, ref_var = (2 * log_std).exp(), (2 * ref_log_std).exp()
    per_dim = ref_log_std - log_std + (var + (mean - ref_mean) ** 2) / (2 * ref_var) - 0.5
    executed = (per_dim.sum(-1) * mask).sum(-1) / (mask.sum(-1) * mean.shape[-1]).clamp_min(1)
    return executed.mean()


def demo_nll(model: VLAModel, images, joints, text, actions, mask, outputs: tuple | None = None) -> torch.Tensor:
    """Mean negative log-likelihood per executed position of demonstration chunks (``outputs``: the
    model's ``forward_normalised`` on these rows, when the caller has it already).

    The log-std is held (detached) here: the demonstrations teach the mean, and the exploration noise
    belongs to the RL objective. Left free, this term shrinks the std towards the demos' residuals
    (measured: the chunk entropy fell 13.8 -> 8.8 in 17 updates with a demo phase), and every PPO ratio
    of the sharper Gaussian then starts outside the clip range."""
    log_prob, _, _ = chunk_log_prob(model, images, joints, text, actions, mask, hold_std=True, outputs=outputs)
    return -(log_prob / (mask.sum(-1) * actions.shape[-1]).clamp_min(1)).mean()


def tensors(d: Decisions, rows: np.ndarray, embed, device: torch.device | None = None) -> tuple:
    """(images, joints, text, actions, mask) of ``rows``, on ``device`` (None: the CPU)."""
    images = {c: torch.from_numpy(v[rows]) for c, v in d.images.items()}
    text = torch.from_numpy(np.stack([embed(d.instructions[i]) for i in rows]))
    out = (images, torch.from_numpy(d.joints[rows]), text, torch.from_numpy(d.actions[rows]),
           torch.from_numpy(d.mask[rows].astype(np.float32)))
    return out if device is None else to_device(out, device)


@torch.no_grad()
def evaluate_rows(model: VLAModel, d: Decisions, embed, batch: int = 128,
                  exploration: str = "step") -> tuple[np.ndarray, np.ndarray]:
    """(log-probabilities, values) of all rows under ``model`` (``exploration``: section 9)."""
    model.eval()
    device = model_device(model)
    lps, vals = [], []
    for start in range(0, len(d), batch):
        rows = np.arange(start, min(start + batch, len(d)))
        lp, v, _ = chunk_log_prob(model, *tensors(d, rows, embed, device), exploration=exploration)
        lps.append(lp.cpu().numpy())
        vals.append(v.cpu().numpy())
    return np.concatenate(lps), np.concatenate(vals)


class DataParallel:
    """This learner's part in data-parallel training (torch.distributed, e.g. under ``torchrun``).

    Every rank holds the same decisions and draws the same minibatches (same seed); each computes the
    loss on its slice ``rows[rank::world]`` of every minibatch, and the gradients are averaged before
    the step, so all ranks take identical steps (their weights stay equal) and the update equals one
    learner's on the whole minibatch. The KL that stops an update early is averaged too, so every rank
    stops at the same minibatch. ``device``: where this rank computes (NCCL reduces GPU tensors only)."""

    def __init__(self, rank: int, world: int, device: torch.device | str = "cpu"):
        self.rank, self.world, self.device = rank, world, torch.device(device)

    def slice(self, rows: np.ndarray) -> np.ndarray:
        return rows[self.rank::self.world]

    def reduce_gradients(self, model: torch.nn.Module) -> None:
        for p in model.parameters():
            if not p.requires_grad:  # frozen (train_image_encoders: false)
                continue
            if p.grad is None:  # a rank with nothing to do this minibatch still joins every all-reduce
                p.grad = torch.zeros_like(p)
            torch.distributed.all_reduce(p.grad)
            p.grad /= self.world

    def mean(self, value: float) -> float:
        t = torch.tensor([value], dtype=torch.float64, device=self.device)
        torch.distributed.all_reduce(t)
        return float(t.item()) / self.world


def _demo_term(model: VLAModel, demos, config: PPOConfig, rng: np.random.Generator, embed,
               parallel: DataParallel | None, object_head=None) -> tuple[torch.Tensor | None, dict]:
    """This rank's share of the demo NLL on one drawn batch (every rank draws the same), or None;
    plus ``objects_coef`` times the object head's loss on the drawn rows that record object positions.
    Also the parts for the report: the NLL, and the head's error in millimetres where it ran."""
    with_objects = object_head is not None and config.objects_coef > 0
    sample = demos.sample(config.demo_batch_size, rng, embed, config.demo_human_fraction, with_objects=with_objects)
    if config.demo_shift_pad > 0:  # the augmentation behaviour cloning trained with (learn/bc.py)
        generator = torch.Generator().manual_seed(int(rng.integers(2 ** 31)))
        sample = (shift_frames(sample[0], config.demo_shift_pad, generator),) + sample[1:]
    sample = to_device(sample, model_device(model))  # drawn and shifted on the CPU (the same draws on any device)
    drawn = len(sample[1])
    world = parallel.world if parallel is not None else 1
    if parallel is not None:
        sample = tuple({k: v[parallel.rank::world] for k, v in x.items()} if isinstance(x, dict)
                       else x[parallel.rank::world] for x in sample)
    if not len(sample[1]):
        return None, {}
    share = world * len(sample[1]) / drawn
    if not with_objects:
        nll = demo_nll(model, *sample)
        return nll * share, {"nll": nll.item()}
    images, joints, text, actions, mask, objects = sample
    seen = model.image_features(images)  # shared by the NLL and the object head
    nll = demo_nll(model, images, joints, text, actions, mask, outputs=model.forward_normalised(images, joints, text, seen))
    term, parts = nll, {"nll": nll.item()}
    known = ~torch.isnan(objects).any(dim=-1)
    if known.any():
        object_loss, parts["objects_mm"] = object_head.loss(seen[known], objects[known])
        term = term + config.objects_coef * object_loss * known.float().mean()
    return term * share, parts


def demo_phase(model: VLAModel, optimiser: torch.optim.Optimizer, demos, config: PPOConfig, embed,
               rng: np.random.Generator, parallel: DataParallel | None = None, object_head=None) -> dict:
    """``config.demo_steps`` gradient steps on the demo NLL alone (section 6; with ``object_head``, its
    auxiliary loss too: the head's parameters must be in ``optimiser``). Returns the mean NLL
    (``demo_phase_nll``) and, with the head, its mean error (``demo_phase_objects_mm``)."""
    parts: dict[str, list[float]] = {"nll": [], "objects_mm": []}
    model.train()
    for _ in range(config.demo_steps):
        optimiser.zero_grad(set_to_none=True)
        term, drawn = _demo_term(model, demos, config, rng, embed, parallel, object_head)
        if term is not None:
            term.backward()
            for k, v in drawn.items():
                parts[k].append(v)
        if parallel is not None:
            parallel.reduce_gradients(model)
            if object_head is not None:
                parallel.reduce_gradients(object_head)
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
        optimiser.step()
    model.eval()
    out = {"demo_phase_nll": float(np.mean(parts["nll"])) if parts["nll"] else 0.0}
    if parts["objects_mm"]:
        out["demo_phase_objects_mm"] = float(np.mean(parts["objects_mm"]))
    return out


def explained_variance(values: np.ndarray, returns: np.ndarray) -> float:
    """1 - Var(returns - values) / Var(returns) (section 7); 0 when the returns do not vary."""
    var = float(np.var(returns))
    return 1.0 - float(np.var(returns - values)) / var if var > 1e-12 else 0.0


@torch.no_grad()
def trunk_features(model: VLAModel, d: Decisions, embed, batch: int = 128) -> torch.Tensor:
    """The trunk's features of every row of ``d`` (what the value head reads)."""
    model.eval()
    device = model_device(model)
    out = []
    for start in range(0, len(d), batch):
        images, joints, text, _, _ = tensors(d, np.arange(start, min(start + batch, len(d))), embed, device)
        out.append(model.features(images, joints, text))
    return torch.cat(out) if out else torch.zeros(0, device=device)


def fit_value(model: VLAModel, optimiser: torch.optim.Optimizer, window: list[tuple[Decisions, np.ndarray]],
              config: PPOConfig, embed, rng: np.random.Generator) -> dict:
    """``config.value_steps`` regression steps of the value head alone onto the returns of ``window``
    ((decisions, returns) of recent updates) on fixed trunk features (section 7). Every data-parallel
    rank holds the same window and draws the same rows, so each takes the same steps on its own.
    Returns the value loss before and after."""
    if not window or config.value_steps <= 0:
        return {}
    features = torch.cat([trunk_features(model, d, embed) for d, _ in window])
    targets = torch.from_numpy(np.concatenate([r for _, r in window]).astype(np.float32)).to(features.device)
    head = model.value_head
    with torch.no_grad():
        before = F.mse_loss(head(features).squeeze(-1), targets).item()
    for _ in range(config.value_steps):
        rows = torch.from_numpy(rng.choice(len(targets), min(config.value_minibatch_size, len(targets)),
                                           replace=False)).to(features.device)
        optimiser.zero_grad(set_to_none=True)
        F.mse_loss(head(features[rows]).squeeze(-1), targets[rows]).backward()
        optimiser.step()
    with torch.no_grad():
        after = F.mse_loss(head(features).squeeze(-1), targets).item()
    return {"value_fit_loss_before": before, "value_fit_loss_after": after, "value_fit_rows": float(len(targets))}


def loss_advantages(advantages: np.ndarray, config: PPOConfig) -> np.ndarray:
    """The advantages as the surrogate takes them (normalised over the batch unless switched off)."""
    if config.normalise_advantages and len(advantages) > 1:
        return (advantages - advantages.mean()) / (advantages.std() + 1e-8)
    return advantages


def ratio_base_and_weight(old_log_prob: np.ndarray, prox_log_prob: np.ndarray | None,
                          config: PPOConfig) -> tuple[np.ndarray, np.ndarray]:
    """(the log-probabilities the ratio is taken against, the off-policy weight per row): section 3."""
    if config.decoupled and prox_log_prob is not None:
        weight = np.minimum(np.exp(np.clip(prox_log_prob - old_log_prob, -50, 50)), config.max_behaviour_weight)
        return prox_log_prob, weight.astype(np.float32)
    return old_log_prob, np.ones(len(old_log_prob), np.float32)


def chunk_log_ratio(log_prob: torch.Tensor, base: torch.Tensor, mask: torch.Tensor, joints: int, points: int,
                    config: PPOConfig) -> torch.Tensor:
    """A decision's log-ratio as the loss clips it: the chunk's, or per executed dimension (section 5)."""
    log_ratio = log_prob - base
    if config.ratio_per_dimension:  # the geometric mean over executed dimensions
        log_ratio = log_ratio / ratio_dimensions(mask, joints, points, config.exploration)
    return log_ratio


def policy_parameters(model: VLAModel) -> list[torch.nn.Parameter]:
    """The trained parameters the surrogate's gradient reaches (the value head is the value's)."""
    value = {id(p) for p in model.value_head.parameters()}
    return [p for p in model.parameters() if p.requires_grad and id(p) not in value]


def surrogate_gradient_sums(model: VLAModel, d: Decisions, advantages: np.ndarray, old_log_prob: np.ndarray,
                            config: PPOConfig, embed, prox_log_prob: np.ndarray | None = None) -> tuple[int, float, float]:
    """Section 10: (episodes m, |sum_i g_i|^2, sum_i |g_i|^2) of the per-episode gradients g_i of the
    surrogate at the current weights. Holds one parameter-sized sum, not the m gradients."""
    adv = loss_advantages(advantages, config)
    base, weight = ratio_base_and_weight(old_log_prob, prox_log_prob, config)
    params = policy_parameters(model)
    device = model_device(model)
    total = [torch.zeros_like(p) for p in params]  # the parameters' dtype: one more model's worth of memory
    squares, episodes = 0.0, 0
    for e in np.unique(d.episode):
        rows = np.nonzero(d.episode == e)[0]
        images, joints, text, actions, mask = tensors(d, rows, embed, device)
        outputs = model.forward_normalised(images, joints, text)
        log_prob, _, _ = chunk_log_prob(model, images, joints, text, actions, mask, outputs=outputs,
                                        exploration=config.exploration)
        log_ratio = chunk_log_ratio(log_prob, torch.from_numpy(base[rows]).to(device), mask, actions.shape[-1],
                                    outputs[0].shape[-1], config)
        surrogate = (torch.from_numpy(weight[rows] * adv[rows]).to(device) * log_ratio.exp()).sum()
        grads = torch.autograd.grad(surrogate, params, allow_unused=True)
        for acc, g in zip(total, grads):
            if g is not None:
                acc += g
                squares += float((g.double() ** 2).sum())
        episodes += 1
    return episodes, float(sum((acc.double() ** 2).sum() for acc in total)), squares


def gradient_noise_estimates(episodes: int, sum_sq: float, squares: float) -> tuple[float, float]:
    """Section 10: unbiased (|G|^2, tr Sigma) from m >= 2 per-episode gradients' |sum g|^2 and sum |g|^2."""
    m = episodes
    return (sum_sq - squares) / (m * (m - 1)), (squares - sum_sq / m) / (m - 1)


def noise_scale_lower_bound(signal_sq: float, trace: float, signal_se: float) -> float:
    """Section 10: the smallest B the estimates allow, with |G|^2 at most its estimate (clamped at 0:
    a negative estimate is noise around a small one) plus two standard errors; 0 when nothing is known."""
    upper = max(signal_sq, 0.0) + 2 * signal_se
    return trace / upper if 0 < upper < math.inf else 0.0


class GradientNoise:
    """Section 10: the gradient-noise scale B (episodes) pooled over the last ``window`` updates."""

    def __init__(self, window: int):
        self.updates: collections.deque = collections.deque(maxlen=max(1, window))  # (m, |G|^2, tr Sigma)

    def add(self, episodes: int, sum_sq: float, squares: float) -> None:
        if episodes >= 2:  # one episode says nothing about the spread
            self.updates.append((episodes, *gradient_noise_estimates(episodes, sum_sq, squares)))

    def report(self, batch_episodes: int) -> dict:
        """``gradient_signal_sq`` (|G|^2) and ``gradient_noise_trace`` (tr Sigma), pooled; the scale
        ``gradient_noise_scale`` where |G|^2 is resolved (above two standard errors across updates),
        else None; ``gradient_noise_scale_low``: the smallest B the estimates allow; and
        ``gradient_signal_share_high``: the most of a step of ``batch_episodes`` that can be signal."""
        if not self.updates:
            return {}
        m, per_update, traces = (np.asarray(column, np.float64) for column in zip(*self.updates))
        # each update's estimates weighted by the pairs (|G|^2) and degrees of freedom (tr Sigma) behind them
        signal = float(np.sum(per_update * m * (m - 1)) / np.sum(m * (m - 1)))
        noise = float(np.sum(traces * (m - 1)) / np.sum(m - 1))
        se = float(per_update.std(ddof=1) / math.sqrt(len(per_update))) if len(per_update) > 1 else math.inf
        low = noise_scale_lower_bound(signal, noise, se)
        return {"gradient_signal_sq": signal, "gradient_noise_trace": noise, "gradient_noise_updates": len(per_update),
                "gradient_noise_scale": noise / signal if signal > 2 * se else None,
                "gradient_noise_scale_low": low,
                "gradient_signal_share_high": batch_episodes / (batch_episodes + low) if batch_episodes else None}


def ppo_update(model: VLAModel, optimiser: torch.optim.Optimizer, d: Decisions, old_log_prob: np.ndarray,
               advantages: np.ndarray, returns: np.ndarray, config: PPOConfig, embed, demos=None,
               generator: np.random.Generator | None = None, parallel: DataParallel | None = None,
               prox_log_prob: np.ndarray | None = None, reference: VLAModel | None = None) -> dict:
    """Epochs of minibatch PPO (plus the demo NLL term); returns the mean metrics of the update.
    ``old_log_prob``: the behaviour's (the version that acted); ``prox_log_prob``: the current weights'
    before this update (section 3; None or ``decoupled: false``: the ratio is taken against the
    behaviour). ``parallel``: this rank's part in data-parallel training (None: one learner).
    ``reference``: the starting policy, frozen, for the anchor (section 8; needed when
    ``anchor_coef`` > 0)."""
    if config.anchor_coef > 0 and reference is None:
        raise ValueError("ppo.anchor_coef > 0 needs the starting policy as the reference")
    rng = generator or np.random.default_rng(0)
    adv = loss_advantages(advantages, config)
    ratio_base, weight = ratio_base_and_weight(old_log_prob, prox_log_prob, config)
    device = model_device(model)
    stats: dict[str, list[float]] = {k: [] for k in ("policy_loss", "value_loss", "entropy", "approx_kl", "clip_fraction",
                                                     "demo_nll", "anchor_kl")}
    stats["behaviour_weight"] = [float(weight.mean())] if len(weight) else []
    model.train()
    stopped_early = False
    for _ in range(config.epochs):
        order = rng.permutation(len(d))
        for start in range(0, len(d), config.minibatch_size):
            batch = order[start:start + config.minibatch_size]
            rows = parallel.slice(batch) if parallel is not None else batch
            # each term is weighted by this rank's share of its rows, so the averaged gradient is the
            # whole minibatch's mean even when the slices differ in size (world * share sums to 1 over ranks)
            world = parallel.world if parallel is not None else 1
            optimiser.zero_grad(set_to_none=True)
            loss = None
            if len(rows):
                images, joints, text, actions, mask = tensors(d, rows, embed, device)
                outputs = model.forward_normalised(images, joints, text)
                log_prob, value, entropy = chunk_log_prob(model, images, joints, text, actions, mask, outputs=outputs,
                                                          exploration=config.exploration)
                log_ratio = chunk_log_ratio(log_prob, torch.from_numpy(ratio_base[rows]).to(device), mask,
                                            actions.shape[-1], outputs[0].shape[-1], config)
                ratio = log_ratio.exp()
                a = torch.from_numpy(adv[rows]).to(device)
                w = torch.from_numpy(weight[rows]).to(device)
                policy_loss = (w * torch.max(-a * ratio, -a * ratio.clamp(1 - config.clip, 1 + config.clip))).mean()
                value_loss = F.mse_loss(value, torch.from_numpy(returns[rows]).to(device))
                ppo_loss = policy_loss + config.value_coef * value_loss - config.entropy_coef * entropy.mean()
                if config.anchor_coef > 0:  # section 8
                    with torch.no_grad():
                        ref_mean, ref_log_std, _ = reference.forward_normalised(images, joints, text)
                    kl_start = anchor_kl(outputs[0], outputs[1], ref_mean, ref_log_std, mask)
                    ppo_loss = ppo_loss + config.anchor_coef * kl_start
                    stats["anchor_kl"].append(kl_start.item())
                loss = ppo_loss * (world * len(rows) / len(batch))
            if demos is not None and config.demo_coef > 0 and len(demos):
                nll, _ = _demo_term(model, demos, config, rng, embed, parallel)
                if nll is not None:
                    loss = config.demo_coef * nll if loss is None else loss + config.demo_coef * nll
                    stats["demo_nll"].append(nll.item())
            if loss is not None:
                loss.backward()
            if parallel is not None:
                parallel.reduce_gradients(model)
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
            optimiser.step()
            if not len(rows):
                continue
            with torch.no_grad():
                approx_kl = ((ratio - 1) - log_ratio).mean().item()  # the k3 estimator, always >= 0
                stats["approx_kl"].append(approx_kl)
                stats["clip_fraction"].append(((ratio - 1).abs() > config.clip).float().mean().item())
            stats["policy_loss"].append(policy_loss.item())
            stats["value_loss"].append(value_loss.item())
            stats["entropy"].append(entropy.mean().item())
        recent = stats["approx_kl"][-max(1, len(d) // config.minibatch_size):]
        kl = float(np.mean(recent)) if recent else 0.0
        if parallel is not None:
            kl = parallel.mean(kl)
        if config.target_kl and kl > config.target_kl:
            stopped_early = True
            break
    model.eval()
    out = {k: float(np.mean(v)) if v else 0.0 for k, v in stats.items()}
    out["stopped_early"] = float(stopped_early)
    return out
