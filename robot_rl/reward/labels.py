"""Training labels of the pairwise progress critic, and the value curve built from its outputs.

Progress delta (VLAC). For frames i < j of a successful episode of length T, ``c = (j - i) / (T - i)``:
the share of the *remaining* work done between i and j. The reversed pair (j, i) gets ``-c``. Pairs
whose images barely differ get 0 (stagnation); pairs shown with an unrelated instruction get 0
(irrelevant-prompt rejection).

The same label written with a per-frame progress target ``v_t``: with ``v_t = t / T``,
``c = (v_j - v_i) / (1 - v_i)``, and when progress goes down, ``c = (v_j - v_i) / v_i``. These are
exactly the inverses of VLAC's value update (``v <- v + c (1 - v)`` for c >= 0, ``v <- v + c v`` for
c < 0), so a critic that predicts the labels exactly integrates back to ``v``. That lets one rule label
every kind of episode:

- clean demonstrations that succeeded (``source`` oracle or teleop): ``v_t = min(t / T, 1)`` with T
  the row at which success was first recorded (``meta.extra.success_step``; else the length), as VLAC;
  the rows after T (the settle tail of a demonstration) are at progress 1;
- other episodes (noisy oracle, random walk, policy rollouts) when they carry a ground-truth
  ``progress`` array (simulation: ``TabletopWorld.task_progress``): ``v_t = progress_t``; a time label
  would call a detour or a stall progress;
- other successful episodes without it: time, as above;
- failed episodes without it (hardware): no progress label (nothing says how far they got); they still
  give done labels and stagnation pairs.

Done. On successful episodes 0 before 0.8 T, 1 from 0.95 T on (and on the settle tail), unlabelled in
between (NaN); on failed episodes 0 everywhere (the task was never done). Successful imperfect
episodes with measured progress: 1 where it is 1 (the task holds at that frame), 0 below 0.8,
unlabelled between: a noisy reach can touch the cube and drift off again.
"""

from __future__ import annotations

import numpy as np

from robot_rl.data.episodes import Episode

DEMONSTRATION_SOURCES = ("oracle", "teleop")
DONE_BEFORE, DONE_AFTER = 0.8, 0.95  # done is 0 before 0.8 T and 1 from 0.95 T on


def success_step(episode: Episode) -> int:
    """T of the labels: the row where success was first recorded, else the episode length."""
    return episode.success_step or len(episode)


def progress_targets(episode: Episode) -> np.ndarray | None:
    """Per-row progress target ``v_t`` in [0, 1], or None where the episode gives no progress label."""
    n = len(episode)
    if n == 0:
        return None
    measured = episode.extras.get("progress")
    if episode.meta.success and (episode.meta.source in DEMONSTRATION_SOURCES or measured is None):
        return np.minimum(np.arange(n) / success_step(episode), 1.0).astype(np.float32)
    if measured is not None:
        return np.clip(np.asarray(measured, np.float32), 0.0, 1.0)
    return None


def delta_from_values(v0: float, v1: float) -> float:
    """The progress delta that takes the value from ``v0`` to ``v1`` under the VLAC update."""
    if v1 >= v0:
        return 0.0 if v0 >= 1.0 else float((v1 - v0) / (1.0 - v0))
    return float((v1 - v0) / v0)  # v0 > v1 >= 0, so v0 > 0


def pair_label(v: np.ndarray, i: int, j: int) -> float:
    """Delta label of the ordered pair (frame i, then frame j); antisymmetric by construction."""
    if i == j:
        return 0.0
    lo, hi = min(i, j), max(i, j)
    c = delta_from_values(float(v[lo]), float(v[hi]))
    return c if i < j else -c


def done_labels(episode: Episode) -> np.ndarray:
    """Per-row done label: 1, 0, or NaN where unlabelled."""
    n = len(episode)
    if not episode.meta.success:
        return np.zeros(n, np.float32)
    measured = episode.extras.get("progress")
    if measured is not None and episode.meta.source not in DEMONSTRATION_SOURCES:
        # an imperfect run can be done for a moment and then undo it (a noisy reach drifting off the
        # cube): done where the measured progress says the task holds, 0 well before, unsure between
        m = np.asarray(measured, np.float32)
        return np.where(m >= 0.999, 1.0, np.where(m < DONE_BEFORE, 0.0, np.nan)).astype(np.float32)
    t_done = success_step(episode)
    t = np.arange(n)
    labels = np.full(n, np.nan, np.float32)
    labels[t < DONE_BEFORE * t_done] = 0.0
    labels[(t >= DONE_AFTER * t_done) | (t >= t_done)] = 1.0
    return labels


def image_difference(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference of two uint8 frames (or stacks of frames), in grey levels."""
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def value_curve(deltas, v0: float = 0.0) -> np.ndarray:
    """VLAC's value from a chain of deltas: v <- v + c (1 - v) for c >= 0, v <- v + c v for c < 0.

    Returns len(deltas) + 1 values, starting with ``v0``; every value stays in [0, 1] when every
    delta is in [-1, 1].
    """
    values = [float(v0)]
    for c in np.asarray(deltas, np.float64):
        v = values[-1]
        values.append(v + c * (1.0 - v) if c >= 0 else v + c * v)
    return np.asarray(values)
