"""The progress-critic interface: what the reward node and the learner call, local or remote.

``Critic.score(requests)`` scores a list of :class:`PairRequest` (earlier frames, later frames,
instruction, optional reference frames) and returns one :class:`PairScores` per request. Frames are
uint8 RGB at any size: a critic resizes them to what it was trained on. Implementations:

- :class:`robot_rl.reward.local.LocalCritic`: a trained critic in this process (torch checkpoint, or
  an exported directory with ONNX Runtime or torch);
- :class:`robot_rl.reward.remote.RemoteCritic`: the same calls answered by ``robot-rl critic-server``
  over ZeroMQ (one GPU scoring for many robots);
- :class:`robot_rl.reward.vlac_adapter.VLACCritic`: InternRobotics' released VLAC checkpoint, when
  its package and weights are installed (optional).

:func:`make_critic` picks one from a spec string, importing heavy packages only for the one chosen.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np


class CriticError(ValueError):
    """Bad input to a critic (missing camera, wrong shape, unknown instruction); the message says which."""


class CriticUnavailableError(RuntimeError):
    """The critic cannot answer (a remote server is gone or too slow)."""


@dataclass
class PairRequest:
    early: dict[str, np.ndarray]  # camera -> uint8 (B, H, W, 3)
    late: dict[str, np.ndarray]  # camera -> uint8 (B, H, W, 3)
    instruction: str
    references: dict[str, np.ndarray] | None = None  # camera -> uint8 (K, H, W, 3), one successful episode

    @property
    def batch(self) -> int:
        return len(next(iter(self.early.values())))


@dataclass
class PairScores:
    delta: np.ndarray  # float32 (B,) in [-1, 1]
    done_prob: np.ndarray  # float32 (B,) in [0, 1]


def check_request(request: PairRequest, cameras: list[str]) -> None:
    """Raise :class:`CriticError` naming the camera and array when a request is malformed."""
    for role in ("early", "late"):
        frames = getattr(request, role)
        if not isinstance(frames, dict):
            raise CriticError(f"{role} frames must be a dict camera -> uint8 (B, H, W, 3) array")
        missing = [c for c in cameras if c not in frames]
        if missing:
            raise CriticError(f"{role} frames lack camera(s) {missing}; the critic needs {cameras}")
    b = None
    for role in ("early", "late"):
        for cam in cameras:
            a = getattr(request, role)[cam]
            if not isinstance(a, np.ndarray) or a.dtype != np.uint8 or a.ndim != 4 or a.shape[-1] != 3:
                raise CriticError(f"{role} frames of camera '{cam}' must be uint8 (B, H, W, 3), got "
                                  f"{getattr(a, 'dtype', type(a).__name__)} {getattr(a, 'shape', '')}")
            if b is None:
                b = a.shape[0]
            if a.shape[0] != b:
                raise CriticError(f"{role} frames of camera '{cam}' have batch {a.shape[0]}, others {b}")
    if b == 0:
        raise CriticError("empty request: no pairs to score")
    if not isinstance(request.instruction, str) or not request.instruction.strip():
        raise CriticError("the instruction is empty")
    if request.references is not None:
        for cam in cameras:
            r = request.references.get(cam)
            if r is None or r.dtype != np.uint8 or r.ndim != 4 or r.shape[-1] != 3 or len(r) == 0:
                raise CriticError(f"reference frames of camera '{cam}' must be uint8 (K, H, W, 3) with K >= 1")


class Critic(ABC):
    name = "critic"
    cameras: list[str]

    @abstractmethod
    def score(self, requests: list[PairRequest]) -> list[PairScores]: ...

    def score_pair(self, early: dict[str, np.ndarray], late: dict[str, np.ndarray], instruction: str,
                   references: dict[str, np.ndarray] | None = None) -> tuple[float, float]:
        """One pair of single frames (camera -> (H, W, 3)) -> (delta, done_prob)."""
        out = self.score([PairRequest({c: v[None] for c, v in early.items()}, {c: v[None] for c, v in late.items()},
                                      instruction, references)])[0]
        return float(out.delta[0]), float(out.done_prob[0])

    def describe(self) -> str:
        return self.name

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def make_critic(spec: str, backend: str = "auto", timeout_s: float = 2.0, **options) -> Critic:
    """``tcp://host:port`` / ``ipc://path``: a critic server; ``vlac:<model dir>``: the released VLAC;
    otherwise a critic export directory or a ``train-critic`` checkpoint (.pt)."""
    if spec.startswith(("tcp://", "ipc://")):
        from robot_rl.reward.remote import RemoteCritic

        return RemoteCritic(spec, timeout_s=timeout_s, **options)
    if spec.startswith("vlac:"):
        from robot_rl.reward.vlac_adapter import VLACCritic

        return VLACCritic(spec[len("vlac:"):], **options)
    from robot_rl.reward.local import LocalCritic

    return LocalCritic(spec, backend=backend, **options)
