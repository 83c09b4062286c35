"""One rank of the data-parallel learner test (run by torchrun from test_distributed.py).

Every rank updates on the same episodes; rank r writes its weights to ``<out>/rank<r>.safetensors``."""

import json
import sys
from pathlib import Path

import torch.distributed
from safetensors.torch import save_file

from robot_rl.data.episodes import list_episodes, read_episode
from robot_rl.learn.learner import Learner, LearnerConfig


def main(config_file: str, episodes_dir: str, out: str, updates: int) -> None:
    torch.distributed.init_process_group(backend="gloo")
    learner = Learner(LearnerConfig.from_dict(json.loads(Path(config_file).read_text())))
    assert learner.parallel is not None and learner.parallel.world == 2
    episodes = [read_episode(p) for p in list_episodes(episodes_dir)]
    for _ in range(updates):
        learner.update(episodes)
    save_file({k: v.contiguous() for k, v in learner.model.state_dict().items()},
              str(Path(out) / f"rank{learner.parallel.rank}.safetensors"))
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
