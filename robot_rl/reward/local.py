"""A trained progress critic running in this process: a ``train-critic`` checkpoint (torch) or an
exported critic directory (``critic.onnx`` with ONNX Runtime, or ``critic.safetensors`` with torch).

It resizes frames to the critic's size, embeds instructions (the export carries the embeddings of
the instructions it was trained on; others go through the sentence encoder, loaded on first need),
and refuses an instruction it was not trained on unless reference frames come with it (one-shot) or
``allow_unseen_instructions`` is set: an unknown instruction is far more often a typo than a new task.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from robot_rl.policy.text import EMBEDDING_DIM
from robot_rl.policy.vla_policy import resize_rgb
from robot_rl.reward.base import Critic, CriticError, PairRequest, PairScores, check_request
from robot_rl.sim.tasks import normalise_instruction


def resize_stack(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    """``resize_rgb`` of every frame of a (N, H, W, 3) stack (one numpy pass for integer factors)."""
    n, h, w = frames.shape[:3]
    if (h, w) == (height, width):
        return np.ascontiguousarray(frames)
    if h % height == 0 and w % width == 0 and n:
        fy, fx = h // height, w // width
        return frames.reshape(n, height, fy, width, fx, 3).mean(axis=(2, 4)).round().astype(np.uint8)
    return np.stack([resize_rgb(f, height, width) for f in frames])


class LocalCritic(Critic):
    def __init__(self, path: str | Path, backend: str = "auto", allow_unseen_instructions: bool = False,
                 encoder=None, device: str | None = None):
        path = Path(path)
        self.allow_unseen = allow_unseen_instructions
        self._encoder = encoder
        if path.is_file():  # a train-critic checkpoint
            from robot_rl.reward.train import critic_from_checkpoint, load_critic_checkpoint

            payload = load_critic_checkpoint(path)
            self._model = critic_from_checkpoint(payload)
            config = payload["critic_config"]
            self.instructions = list(payload["instructions"])
            self._embeddings: dict[str, np.ndarray] = {}
            self.backend = "torch"
            self.version = f"checkpoint-{payload.get('step')}"
        else:
            from robot_rl.reward.export import read_critic_metadata

            metadata = read_critic_metadata(path)
            config = metadata["critic_config"]
            self.instructions = list(metadata["instructions"])
            self._embeddings = {k: np.asarray(v, np.float32) for k, v in metadata["instruction_embeddings"].items()}
            self.version = metadata.get("model_version", "unknown")
            self.backend = self._open_export(path, metadata, backend)
        self.cameras = list(config["cameras"])
        self.height, self.width = int(config["image_height"]), int(config["image_width"])
        self.reference_frames = int(config["reference_frames"])
        self._known = {normalise_instruction(i): i for i in self.instructions}
        self.name = f"local critic ({self.backend})"
        self._device = device

    def _open_export(self, path: Path, metadata: dict, backend: str) -> str:
        if backend in ("auto", "onnxruntime"):
            try:
                from robot_rl.inference.backends import OnnxRuntimeBackend

                self._session = OnnxRuntimeBackend(path, metadata)
                self._model = None
                return "onnxruntime"
            except ImportError:
                if backend == "onnxruntime":
                    raise
        if backend not in ("auto", "torch"):
            raise CriticError(f"unknown critic backend '{backend}'; expected auto, onnxruntime or torch")
        from safetensors.torch import load_file

        from robot_rl.reward.critic import CriticConfig, ProgressCritic

        self._model = ProgressCritic(CriticConfig.from_dict(metadata["critic_config"]))
        self._model.load_state_dict(load_file(str(path / "critic.safetensors")))
        self._model.eval()
        return "torch"

    # -- instructions --------------------------------------------------------------------------
    def embedding(self, instruction: str, one_shot: bool = False) -> np.ndarray:
        key = normalise_instruction(instruction)
        if key not in self._known and not (one_shot or self.allow_unseen):
            raise CriticError(f"instruction '{instruction}' is not one the critic was trained on ({self.instructions}); "
                              "give reference frames of a successful episode (one-shot) or allow unseen instructions")
        name = self._known.get(key, instruction)
        if name not in self._embeddings:
            if self._encoder is None:
                from robot_rl.policy.text import InstructionEncoder

                self._encoder = InstructionEncoder()
            self._embeddings[name] = self._encoder.encode(name)
        return self._embeddings[name]

    # -- scoring -------------------------------------------------------------------------------
    def score(self, requests: list[PairRequest]) -> list[PairScores]:
        for r in requests:
            check_request(r, self.cameras)
        # pairs without references all go in one batch; each reference set gets its own
        groups: list[list[int]] = []
        plain = [n for n, r in enumerate(requests) if r.references is None]
        if plain:
            groups.append(plain)
        groups += [[n] for n, r in enumerate(requests) if r.references is not None]
        results: list[PairScores | None] = [None] * len(requests)
        for group in groups:
            delta, done = self._run([requests[n] for n in group])
            start = 0
            for n in group:
                b = requests[n].batch
                results[n] = PairScores(delta[start:start + b], done[start:start + b])
                start += b
        return results

    def _run(self, requests: list[PairRequest]) -> tuple[np.ndarray, np.ndarray]:
        h, w, k = self.height, self.width, self.reference_frames
        refs = requests[0].references
        inputs = {}
        for cam in self.cameras:
            inputs[f"early_{cam}"] = np.concatenate([resize_stack(r.early[cam], h, w) for r in requests])
            inputs[f"late_{cam}"] = np.concatenate([resize_stack(r.late[cam], h, w) for r in requests])
            if refs is None:
                inputs[f"reference_{cam}"] = np.zeros((1, k, h, w, 3), np.uint8)
            else:
                rows = np.linspace(0, len(refs[cam]) - 1, k).round().astype(int)  # K evenly spaced frames
                inputs[f"reference_{cam}"] = resize_stack(refs[cam][rows], h, w)[None]
        text = [np.broadcast_to(self.embedding(r.instruction, one_shot=r.references is not None), (r.batch, EMBEDDING_DIM))
                for r in requests]
        inputs["instruction"] = np.concatenate(text).astype(np.float32)
        inputs["reference_mask"] = np.full(len(inputs["instruction"]), 0.0 if refs is None else 1.0, np.float32)
        if self._model is None:
            out = self._session.run(inputs)
            delta, done = out["delta"], out["done_prob"]
        else:
            delta, done = self._torch(inputs)
        if not (np.all(np.isfinite(delta)) and np.all(np.isfinite(done))):
            raise CriticError("the critic produced NaN or inf (corrupt weights or input)")
        return delta.astype(np.float32), done.astype(np.float32)

    def _torch(self, inputs: dict[str, np.ndarray]):
        import torch

        t = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in inputs.items()}
        with torch.inference_mode():
            delta, done = self._model({c: t[f"early_{c}"] for c in self.cameras}, {c: t[f"late_{c}"] for c in self.cameras},
                                      t["instruction"], {c: t[f"reference_{c}"] for c in self.cameras}, t["reference_mask"])
        return delta.numpy(), done.numpy()

    def info(self) -> dict:
        return {"cameras": self.cameras, "image_height": self.height, "image_width": self.width,
                "reference_frames": self.reference_frames, "instructions": self.instructions,
                "backend": self.backend, "version": self.version}

    def describe(self) -> str:
        return f"{self.name}, {self.version}, {self.width}x{self.height} {'+'.join(self.cameras)}"
