"""The robot-side spool: finished episodes wait on disk until the learner acknowledges them.

An episode is written to the spool directory in the episode format (atomically: a reader never sees
half of one) before anything is sent, and removed only when the learner's "ack" for its id arrives.
A robot that loses the learner, loses power or restarts its episode node therefore resends what is
still in the spool when it reconnects; the learner drops what it already holds by episode id.

When the disk is full (or the spool's own ``max_bytes`` quota is reached) an episode cannot be
written: it is then held in memory (up to ``max_memory_episodes``, oldest first), sent from there,
written when space returns, and the error is logged with the spool path and what is held. Only when
memory is full too is the *newest* episode refused, loudly (``SpoolFullError``): the operator has to
free space; nothing already collected is dropped to make room.

An episode the learner rejects as malformed is moved to ``<spool>/rejected/`` with the reason beside
it, never deleted.
"""

from __future__ import annotations

import logging
import shutil
import threading
from pathlib import Path

from robot_rl.data.episodes import Episode, list_episodes, read_episode, remove_partials, write_episode

log = logging.getLogger("robot_rl.transport.spool")

REJECTED = "rejected"


class SpoolFullError(OSError):
    """Neither the disk nor the in-memory overflow can take another episode."""


def directory_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


class Spool:
    def __init__(self, directory: str | Path, max_bytes: int | None = None, max_memory_episodes: int = 8):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        for p in remove_partials(self.dir):
            log.warning("spool %s: removed %s left by an interrupted write", self.dir, p.name)
        self.max_bytes = max_bytes
        self.max_memory = max_memory_episodes
        self.memory: dict[str, Episode] = {}  # written nowhere yet (disk full); oldest first
        self.lock = threading.Lock()
        self.write_errors = 0
        self.last_error = ""

    # -- robot side: in -------------------------------------------------------------------------
    def put(self, episode: Episode) -> str:
        """Keep an episode until acknowledged; returns its id. Raises SpoolFullError only when the
        episode can be held neither on disk nor in memory."""
        eid = episode.meta.episode_id
        with self.lock:
            self._flush_memory()
            if not self.memory and self._write(episode):
                return eid
            if len(self.memory) >= self.max_memory:
                raise SpoolFullError(f"spool {self.dir}: disk full and {len(self.memory)} episodes already held in "
                                     f"memory; episode {eid} cannot be kept (free space under {self.dir})")
            self.memory[eid] = episode
            log.error("spool %s: cannot write episode %s (%s); holding it in memory (%d held), will retry",
                      self.dir, eid, self.last_error, len(self.memory))
            return eid

    def _write(self, episode: Episode) -> bool:
        try:
            if self.max_bytes is not None:
                size = sum(a.nbytes for a in (*episode.images.values(), episode.joint_positions, episode.actions))
                used = directory_bytes(self.dir)
                if used + size > self.max_bytes:
                    raise OSError(f"spool quota max_bytes={self.max_bytes} reached ({used} bytes used)")
            write_episode(self.dir, episode)
            return True
        except FileExistsError:
            return True  # the same episode spooled twice: one copy is enough
        except OSError as exc:
            self.write_errors += 1
            self.last_error = str(exc)
            return False

    def _flush_memory(self) -> None:
        for eid in list(self.memory):
            if not self._write(self.memory[eid]):
                return
            del self.memory[eid]
            log.info("spool %s: episode %s written to disk after an earlier failure", self.dir, eid)

    # -- robot side: out ------------------------------------------------------------------------
    def pending(self) -> list[str]:
        """Ids of the episodes not yet acknowledged, oldest first."""
        with self.lock:
            self._flush_memory()
            on_disk = [p.name for p in list_episodes(self.dir)]
            return sorted(set(on_disk) | set(self.memory))

    def load(self, eid: str) -> Episode:
        with self.lock:
            if eid in self.memory:
                return self.memory[eid]
        return read_episode(self.dir / eid)

    def acknowledge(self, eid: str) -> None:
        with self.lock:
            self.memory.pop(eid, None)
            path = self.dir / eid
            if path.is_dir():
                shutil.rmtree(path)

    def reject(self, eid: str, reason: str) -> Path:
        """Move an episode the learner will never take aside, with the reason; returns where."""
        target = self.dir / REJECTED / eid
        with self.lock:
            target.parent.mkdir(exist_ok=True)
            if eid in self.memory:
                write_episode(target.parent, self.memory.pop(eid))
            elif (self.dir / eid).is_dir():
                shutil.move(str(self.dir / eid), target)
            (target.parent / f"{eid}.reason.txt").write_text(reason + "\n")
        log.error("spool %s: the learner rejected episode %s (%s); moved to %s", self.dir, eid, reason, target)
        return target

    def __len__(self) -> int:
        return len(self.pending())
