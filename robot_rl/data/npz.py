"""Reading ``.npz`` files safely from several threads at once.

numpy parses every array's ``.npy`` header with :func:`ast.literal_eval`. On CPython 3.11 the
AST constructor keeps its recursion-depth counter in per-interpreter state, not per thread, so two
threads building ASTs at the same time can trip ``SystemError: AST constructor recursion depth
mismatch`` (python/cpython gh-106905). It is rare, but it happened here: a learner's inbox thread
died reading an episode while another thread read one too, and the episode was never acked.

Every ``.npz`` read in robot_rl goes through :func:`read_npz`, which holds one process-wide lock
while the archive is opened and its arrays are read. The files are written uncompressed
(``np.savez``), so what the lock serialises is a header parse and a copy: cheap next to the
network and the learner, and it removes the race for robot_rl's own readers.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

NPZ_READ_LOCK = threading.Lock()


def read_npz(path: str | Path) -> dict[str, np.ndarray]:
    """Every array of the archive at ``path``, read under :data:`NPZ_READ_LOCK` (no pickles)."""
    with NPZ_READ_LOCK, np.load(path, allow_pickle=False) as archive:
        return {name: archive[name] for name in archive.files}
