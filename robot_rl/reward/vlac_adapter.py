"""InternRobotics' released VLAC checkpoint behind the :class:`Critic` interface (optional).

Needs the ``evo_vlac`` package (github.com/InternRobotics/VLAC) and its weights on local disk, and in
practice a GPU; neither is in CI, so this adapter is exercised here only up to its clear error when
the package is missing. Use: ``robot-rl critic-server --critic vlac:/path/to/VLAC`` (or the reward
node's ``critic`` parameter), and every robot gets VLAC's scores through the same client.

VLAC scores one camera view per pair and answers in percent; its trajectory API is called with the
two frames of each pair (and up to ``reference_frames`` reference frames), and the percentage is
scaled to [-1, 1]. Its done head is asked about the later frame when the package offers it; else the
done probability is 0 and the progress value alone must carry the signal.
"""

from __future__ import annotations

import numpy as np

from robot_rl.reward.base import Critic, CriticError, PairRequest, PairScores, check_request


class VLACCritic(Critic):
    name = "VLAC (InternRobotics)"

    def __init__(self, model_path: str, camera: str = "front", device: str = "cuda:0", reference_frames: int = 6,
                 batch_num: int = 16, model_type: str = "internvl2"):
        try:
            from evo_vlac import GAC_model
        except ImportError as exc:
            raise CriticError("critic 'vlac:' needs InternRobotics' evo_vlac package and the VLAC weights "
                              "(pip install git+https://github.com/InternRobotics/VLAC; see its README)") from exc
        from PIL import Image

        self._image = Image
        self.model = GAC_model(tag="critic")
        self.model.init_model(model_path=model_path, model_type=model_type, device_map=device)
        self.model.set_config()
        self.model.set_system_prompt()
        self.cameras = [camera]
        self.height, self.width = 448, 448  # VLAC resizes to this itself
        self.reference_frames = reference_frames
        self.batch_num = batch_num
        self.instructions: list[str] = []  # VLAC takes any instruction
        self.allow_unseen = True

    def _pil(self, frame: np.ndarray):
        return self._image.fromarray(np.ascontiguousarray(frame))

    def score(self, requests: list[PairRequest]) -> list[PairScores]:
        cam = self.cameras[0]
        out = []
        for r in requests:
            check_request(r, self.cameras)
            refs = [self._pil(f) for f in r.references[cam]] if r.references is not None else None
            deltas, dones = [], []
            for early, late in zip(r.early[cam], r.late[cam]):
                critic, _ = self.model.get_trajectory_critic(
                    task=r.instruction, image_list=[self._pil(early), self._pil(late)], ref_image_list=refs,
                    batch_num=self.batch_num, ref_num=min(len(refs), self.reference_frames) if refs else 0, rich=True)
                deltas.append(float(np.clip(float(critic[0]) / 100.0, -1.0, 1.0)))
                done = 0.0
                if hasattr(self.model, "get_trajectory_done"):
                    done = float(self.model.get_trajectory_done(task=r.instruction, image_list=[self._pil(late)],
                                                                 ref_image_list=refs)[-1])
                dones.append(float(np.clip(done, 0.0, 1.0)))
            out.append(PairScores(np.asarray(deltas, np.float32), np.asarray(dones, np.float32)))
        return out
