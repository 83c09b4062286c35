"""``robot-rl eval-critic``: how well a progress critic orders held-out episodes.

For each held-out episode (``train.is_heldout``) the critic scores consecutive frames ``stride_s``
apart (VLAC: about 0.2 s), the deltas are chained into a value curve (``labels.value_curve``), and:

- VOC: Spearman correlation of the value curve with time (1: the value rises all the way);
- VROC: the same on the episode played backwards (a good critic gives a strongly negative number).
  VLAC's value starts at 0 and a negative delta scales it down, so from 0 it could never fall: the
  reversed curve starts from the critic's own estimate of where the forward curve ended (the
  reversed episode's first frame is the forward episode's last). This critic is antisymmetric, so
  its reversed deltas are exactly the negated forward ones; the metric matters for critics that are
  not (VLAC itself, behind ``vlac:``);
- VOC-F1: the harmonic mean of max(VOC, 0) and max(-VROC, 0), per episode: high only when the critic
  orders the episode both ways, so a critic that calls everything progress scores 0 (our reading of
  the name; the VLAC paper does not spell it out);
- NR (negative rate): the share of deltas below -0.005 (a negative percentage, VLAC's resolution) on
  successful episodes;
- done F1: the done probability of each scored frame against the done labels (``labels.done_labels``),
  threshold 0.5, unlabelled frames left out;
- the same VOC numbers on failed episodes, which should be well below those of successes.
A constant value curve has no defined Spearman correlation; it counts as 0.

The success numbers are reported twice: over every held-out success, and over the held-out clean
demonstrations only (source oracle or teleop), the setting of VLAC's own numbers. A noisy oracle's
successful episode really does go backwards during a detour, so its negative deltas and lower VOC
are correct answers, not errors; ``goals`` and ``goals_on_demonstrations`` say which goals each meets.

With ``references`` each episode is scored with the frames of another held-out successful episode of
its task as one-shot context: that is the setting for a task left out of training.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from robot_rl.reward.base import Critic, PairRequest
from robot_rl.reward.labels import DEMONSTRATION_SOURCES, value_curve
from robot_rl.reward.train import CriticEpisode, is_heldout, load_critic_episodes, HELDOUT_EVERY

NEGATIVE = -0.005


def spearman(values: np.ndarray) -> float:
    """Spearman rank correlation of ``values`` with their index (ties share their mean rank)."""
    n = len(values)
    if n < 3:
        return 0.0
    order = np.argsort(values, kind="stable")
    ranks = np.empty(n)
    ranks[order] = np.arange(n)
    for v in np.unique(values):  # average ranks of ties
        tied = values == v
        if tied.sum() > 1:
            ranks[tied] = ranks[tied].mean()
    time = np.arange(n, dtype=np.float64)
    if np.std(ranks) < 1e-12:
        return 0.0
    return float(np.corrcoef(ranks, time)[0, 1])


def f1(pred: np.ndarray, truth: np.ndarray) -> float:
    tp = float(np.sum(pred & truth))
    fp, fn = float(np.sum(pred & ~truth)), float(np.sum(~pred & truth))
    return 0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn)


def voc_f1(voc: float, vroc: float) -> float:
    a, b = max(voc, 0.0), max(-vroc, 0.0)
    return 0.0 if a + b == 0 else 2 * a * b / (a + b)


def score_episode(critic: Critic, ep: CriticEpisode, rows: np.ndarray, instruction: str | None = None,
                  references: dict[str, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Deltas and done probabilities of consecutive rows (len(rows) - 1 pairs)."""
    frames = {c: f[rows] for c, f in ep.frames.items()}
    out = critic.score([PairRequest({c: f[:-1] for c, f in frames.items()}, {c: f[1:] for c, f in frames.items()},
                                    instruction or ep.instruction, references)])[0]
    return out.delta, out.done_prob


def evaluate_episodes(critic: Critic, episodes: list[CriticEpisode], stride: int, references: bool = False) -> dict:
    successes = {}
    for e in episodes:
        if e.success:
            successes.setdefault(e.task, []).append(e)
    per_episode, done_pred, done_true, done_clean, deltas_success, deltas_demos, deltas_demos_to_done = [], [], [], [], [], [], []
    for ep in episodes:
        rows = np.arange(0, len(ep), stride)
        if rows[-1] != len(ep) - 1:
            rows = np.append(rows, len(ep) - 1)
        refs = None
        if references:
            others = [r for r in successes.get(ep.task, []) if r is not ep]
            if not others:
                continue
            ref = others[0]
            refs = {c: ref.frames[c][ref.reference_rows(getattr(critic, "reference_frames", 4))] for c in ep.frames}
        delta, done = score_episode(critic, ep, rows, references=refs)
        back, _ = score_episode(critic, ep, rows[::-1], references=refs)
        values = value_curve(delta)
        values_back = value_curve(back, v0=values[-1])  # the reversed episode starts where this one ended
        voc, vroc = spearman(values), spearman(values_back)
        per_episode.append({"episode_id": ep.episode_id, "task": ep.task, "success": ep.success, "source": ep.source,
                            "voc": voc, "vroc": vroc,
                            "voc_f1": voc_f1(voc, vroc), "final_value": float(values[-1]), "pairs": len(delta),
                            "negative_rate": float(np.mean(delta < NEGATIVE))})
        labels = ep.done[rows[1:]]
        known = ~np.isnan(labels)
        done_pred.append(done[known] > 0.5)
        done_true.append(labels[known] > 0.5)
        done_clean.append(not ep.success or ep.source in DEMONSTRATION_SOURCES)
        if ep.success:
            deltas_success.append(delta)
            if ep.source in DEMONSTRATION_SOURCES:
                deltas_demos.append(delta)
                deltas_demos_to_done.append(delta[rows[1:] <= ep.success_step])

    def summary(rows: list[dict]) -> dict:
        if not rows:
            return {"episodes": 0}
        return {"episodes": len(rows), **{k: float(np.mean([r[k] for r in rows])) for k in ("voc", "vroc", "voc_f1", "final_value")}}

    ok = [r for r in per_episode if r["success"]]
    demos = [r for r in ok if r["source"] in DEMONSTRATION_SOURCES]
    failed = [r for r in per_episode if not r["success"]]
    result = {
        "success": {**summary(ok), "negative_rate": float(np.mean(np.concatenate(deltas_success) < NEGATIVE)) if deltas_success else None},
        "demonstrations": {**summary(demos), "negative_rate": float(np.mean(np.concatenate(deltas_demos) < NEGATIVE)) if deltas_demos else None,
                           # up to the frame where the task got done (VLAC's demonstrations end there; ours
                           # go on for a settle tail of near-identical frames labelled 0)
                           "negative_rate_to_done": float(np.mean(np.concatenate(deltas_demos_to_done) < NEGATIVE)) if deltas_demos else None},
        "failure": summary(failed),
        "done": _done_summary(done_pred, done_true),
        # done on the demonstrations and the failures, leaving out the noisy successes
        "done_demonstrations": _done_summary([p for p, c in zip(done_pred, done_clean) if c],
                                             [t for t, c in zip(done_true, done_clean) if c]),
        "per_task": {},
        "episodes": per_episode,
    }
    for task in sorted({r["task"] for r in per_episode}):
        t_ok = [r for r in ok if r["task"] == task]
        t_fail = [r for r in failed if r["task"] == task]
        result["per_task"][task] = {"success": summary(t_ok), "failure": summary(t_fail),
                                    "negative_rate": float(np.mean([r["negative_rate"] for r in t_ok])) if t_ok else None}
    result["voc_f1_gap"] = (result["success"].get("voc_f1", 0.0) - result["failure"].get("voc_f1", 0.0)) if failed and ok else None
    return result


def _done_summary(preds: list[np.ndarray], truths: list[np.ndarray]) -> dict:
    pred, true = (np.concatenate(preds), np.concatenate(truths)) if preds else (np.zeros(0, bool),) * 2
    return {"f1": f1(pred, true), "frames": int(len(true)), "positives": int(true.sum()),
            "accuracy": float(np.mean(pred == true)) if len(true) else None}


GOALS = {"voc": 0.9, "negative_rate": 0.1, "voc_f1_gap": 0.4, "done_f1": 0.95}


def goals_met(result: dict, on: str = "success") -> dict:
    s, done = result[on], result["done" if on == "success" else "done_demonstrations"]
    return {"voc >= 0.9": s.get("voc", 0) >= GOALS["voc"],
            "negative_rate <= 0.1": s.get("negative_rate") is not None and s["negative_rate"] <= GOALS["negative_rate"],
            "voc_f1(success) - voc_f1(failure) >= 0.4": (result["voc_f1_gap"] or 0) >= GOALS["voc_f1_gap"],
            "done_f1 >= 0.95": done["f1"] >= GOALS["done_f1"]}


def evaluate_critic(critic: Critic, data_dirs, stride_s: float = 0.2, control_rate_hz: float = 10.0,
                    heldout_every: int = HELDOUT_EVERY, one_shot_critic: Critic | None = None,
                    one_shot_tasks: list[str] | None = None, max_episodes: int | None = None) -> dict:
    stride = max(1, round(stride_s * control_rate_hz))
    episodes = load_critic_episodes(data_dirs, critic.cameras, critic.height, critic.width,
                                    select=lambda m: is_heldout(m.seed, heldout_every), limit=max_episodes)
    result = {"stride_s": stride_s, "stride_rows": stride, "critic": critic.describe(),
              "heldout": f"seed % {heldout_every} == 0", **evaluate_episodes(critic, episodes, stride)}
    result["goals"] = goals_met(result)  # on every held-out success (noisy ones regress for real)
    result["goals_on_demonstrations"] = goals_met(result, "demonstrations")  # as VLAC: expert trajectories
    if one_shot_critic is not None and one_shot_tasks:
        chosen = [e for e in episodes if e.task in one_shot_tasks]
        result["one_shot"] = {
            "tasks": one_shot_tasks, "critic": one_shot_critic.describe(),
            "with_references": _brief(evaluate_episodes(one_shot_critic, chosen, stride, references=True)),
            "without_references": _brief(evaluate_episodes(_Unseen(one_shot_critic), chosen, stride)),
        }
    return result


def _brief(r: dict) -> dict:
    return {k: r[k] for k in ("success", "failure", "done", "done_demonstrations", "voc_f1_gap")}


class _Unseen(Critic):
    """A critic asked about an instruction it was not trained on, without references (the baseline
    of the one-shot setting)."""

    def __init__(self, critic):
        self.critic, self.cameras, self.name = critic, critic.cameras, critic.name
        self.reference_frames = getattr(critic, "reference_frames", 4)

    def score(self, requests):
        allow = self.critic.allow_unseen
        self.critic.allow_unseen = True
        try:
            return self.critic.score(requests)
        finally:
            self.critic.allow_unseen = allow


def plot_critic(critic: Critic, data_dirs, path: str, stride_s: float = 0.2, control_rate_hz: float = 10.0,
                heldout_every: int = HELDOUT_EVERY, task: str | None = None, frames_shown: int = 5) -> None:
    """PNG: for a held-out success and a held-out failure (of one task where possible), frames beside
    the value curve."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stride = max(1, round(stride_s * control_rate_hz))
    episodes = load_critic_episodes(data_dirs, critic.cameras, critic.height, critic.width,
                                    select=lambda m: is_heldout(m.seed, heldout_every) and (task is None or m.task == task))
    both = [t for t in dict.fromkeys(e.task for e in episodes)
            if any(e.success for e in episodes if e.task == t) and any(not e.success for e in episodes if e.task == t)]
    # a success and a failure of the same task when there is one, else whatever there is
    pick = [e for e in episodes if not both or e.task == both[0]]
    chosen = [e for e in (next((e for e in pick if e.success), None), next((e for e in pick if not e.success), None)) if e]
    if not chosen:
        raise ValueError(f"no held-out episodes to plot in {data_dirs}")
    cam = critic.cameras[0]
    fig = plt.figure(figsize=(14, 3.25 * len(chosen)))
    grid = fig.add_gridspec(len(chosen), frames_shown + 3)
    for row, ep in enumerate(chosen):
        rows = np.arange(0, len(ep), stride)
        delta, done = score_episode(critic, ep, rows)
        values = value_curve(delta)
        seconds = rows / control_rate_hz
        shown = np.linspace(0, len(rows) - 1, frames_shown).round().astype(int)
        for k, r in enumerate(shown):
            ax = fig.add_subplot(grid[row, k])
            ax.imshow(ep.frames[cam][rows[r]])
            ax.set_title(f"t={seconds[r]:.1f}s v={values[r]:.2f}", fontsize=8)
            ax.axis("off")
        ax = fig.add_subplot(grid[row, frames_shown:])
        ax.plot(seconds, values, "-o", ms=3, label="value (chained deltas)")
        ax.plot(seconds[1:], done, "--", label="done probability")
        ax.bar(seconds[1:], delta, width=stride / control_rate_hz * 0.6, alpha=0.3, label="delta")
        if ep.progress is not None:
            ax.plot(np.arange(len(ep)) / control_rate_hz, ep.progress, ":", color="gray", label="label progress")
        ax.set_ylim(-1.05, 1.05)
        ax.set_xlabel("seconds")
        ax.set_title(f"{'SUCCESS' if ep.success else 'FAILURE'}: '{ep.instruction}' (seed {ep.seed}), "
                     f"VOC {spearman(values):.2f}", fontsize=9)
        ax.legend(fontsize=7, loc="lower right")
    fig.suptitle(f"progress critic on held-out episodes: {critic.describe()}", fontsize=10)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write_json(result: dict, path: str) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(result, indent=1))
