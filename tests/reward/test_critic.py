"""The critic model, training, scoring backends and ONNX export, on real episodes from the sim."""

import numpy as np
import pytest
import torch

from robot_rl.data.episodes import list_episodes, read_meta
from robot_rl.reward.base import CriticError, PairRequest, make_critic
from robot_rl.reward.critic import CriticConfig, ProgressCritic
from robot_rl.reward.evaluate import evaluate_critic, plot_critic, spearman
from robot_rl.reward.labels import value_curve
from robot_rl.reward.train import CriticTrainConfig, load_critic_episodes, train_critic


@pytest.mark.parametrize("pooling", ["mean", "spatial_softmax"])
def test_delta_is_antisymmetric_and_zero_on_identical_frames(pooling):
    torch.manual_seed(0)
    model = ProgressCritic(CriticConfig(cameras=["front"], image_height=24, image_width=32, cnn_channels=(8, 16),
                                        image_features=16, hidden=32, pooling=pooling, keypoints=4)).eval()
    for p in model.parameters():  # random weights, not the zero-initialised ones
        torch.nn.init.normal_(p, std=0.2)
    a = {"front": torch.randint(0, 255, (5, 24, 32, 3), dtype=torch.uint8)}
    b = {"front": torch.randint(0, 255, (5, 24, 32, 3), dtype=torch.uint8)}
    text = torch.randn(5, 384)
    with torch.no_grad():
        ab, _ = model(a, b, text)
        ba, _ = model(b, a, text)
        aa, _ = model(a, a, text)
    # (random-noise frames put every keypoint near the centre, so spatial-softmax deltas are small)
    assert torch.allclose(ab, -ba, atol=1e-7) and ab.abs().max() > 1e-5
    assert torch.all(aa == 0)


def test_unknown_pooling_is_refused():
    with pytest.raises(ValueError, match="pooling must be one of"):
        CriticConfig(pooling="max")


def test_tiny_critic_ranks_a_held_out_oracle_episode_above_its_reverse(tiny_critic, critic_episodes):
    critic = make_critic(str(tiny_critic))
    episodes = load_critic_episodes(critic_episodes[0], critic.cameras, critic.height, critic.width,
                                    select=lambda m: m.seed % 5 == 0 and m.task == "reach_cube")
    assert episodes, "the fixture has held-out oracle reach episodes"
    for ep in episodes:
        rows = np.arange(0, len(ep), 2)
        frames = {c: f[rows] for c, f in ep.frames.items()}
        forward = critic.score([PairRequest({c: f[:-1] for c, f in frames.items()}, {c: f[1:] for c, f in frames.items()},
                                            ep.instruction)])[0].delta
        backward = critic.score([PairRequest({c: f[::-1][:-1] for c, f in frames.items()},
                                             {c: f[::-1][1:] for c, f in frames.items()}, ep.instruction)])[0].delta
        assert forward.sum() > 0 > backward.sum()
        assert spearman(value_curve(forward)) > 0.5


def test_training_resumes_from_its_checkpoint(critic_episodes, tmp_path, encoder):
    config = CriticTrainConfig(data=critic_episodes, out=str(tmp_path / "c.pt"), steps=4, batch_size=4, checkpoint_every=2,
                               model={"image_height": 24, "image_width": 32, "cnn_channels": [8], "image_features": 8, "hidden": 16})
    train_critic(config, encoder=encoder, progress=False, log=lambda *_: None)
    logs = []
    config.steps = 6
    train_critic(config, resume=True, encoder=encoder, progress=False, log=logs.append)
    assert any("resuming" in line and "step 4" in line for line in logs)
    assert torch.load(config.out, weights_only=True)["step"] == 6


def test_evaluation_reports_every_metric_and_plots(tiny_critic, critic_episodes, tmp_path):
    critic = make_critic(str(tiny_critic))
    result = evaluate_critic(critic, critic_episodes)
    for key in ("voc", "vroc", "voc_f1", "negative_rate"):
        assert np.isfinite(result["success"][key])
    assert result["success"]["vroc"] < 0 < result["success"]["voc"]
    assert 0 <= result["done"]["f1"] <= 1 and result["done"]["frames"] > 0
    heldout = {e["episode_id"] for e in result["episodes"]}
    assert all(read_meta(p).seed % 5 == 0 for d in critic_episodes for p in list_episodes(d) if p.name in heldout)
    plot_critic(critic, critic_episodes, str(tmp_path / "critic.png"))
    assert (tmp_path / "critic.png").stat().st_size > 10_000


def test_export_matches_torch_and_backends_agree(tiny_critic, critic_episodes, tmp_path):
    from robot_rl.reward.export import export_critic

    meta = export_critic(str(tiny_critic), str(tmp_path / "critic"), data_dirs=critic_episodes, log=lambda *_: None)
    assert meta["parity"]["max_abs_diff"]["delta"] <= 1e-3
    rng = np.random.default_rng(0)
    early = {c: rng.integers(0, 255, (3, 48, 64, 3), dtype=np.uint8) for c in ("front", "wrist")}  # resized by the critic
    late = {c: rng.integers(0, 255, (3, 48, 64, 3), dtype=np.uint8) for c in ("front", "wrist")}
    outs = [make_critic(spec, backend=b).score([PairRequest(early, late, "reach the red cube")])[0]
            for spec, b in ((str(tmp_path / "critic"), "onnxruntime"), (str(tmp_path / "critic"), "torch"), (str(tiny_critic), "auto"))]
    for o in outs[1:]:
        assert np.allclose(o.delta, outs[0].delta, atol=1e-4) and np.allclose(o.done_prob, outs[0].done_prob, atol=1e-4)


def test_bad_input_gets_clear_errors(tiny_critic):
    critic = make_critic(str(tiny_critic))
    frame = {c: np.zeros((1, 24, 32, 3), np.uint8) for c in critic.cameras}
    with pytest.raises(CriticError, match="lack camera"):
        critic.score([PairRequest({"front": frame["front"]}, frame, "reach the red cube")])
    with pytest.raises(CriticError, match="uint8"):
        critic.score([PairRequest({c: v.astype(np.float32) for c, v in frame.items()}, frame, "reach the red cube")])
    with pytest.raises(CriticError, match="empty request"):
        critic.score([PairRequest({c: v[:0] for c, v in frame.items()}, {c: v[:0] for c, v in frame.items()}, "reach the red cube")])
    with pytest.raises(CriticError, match="not one the critic was trained on"):
        critic.score([PairRequest(frame, frame, "make me a sandwich")])
    refs = {c: np.zeros((5, 24, 32, 3), np.uint8) for c in critic.cameras}
    one_shot = critic.score([PairRequest(frame, frame, "make me a sandwich", refs)])[0]  # one-shot: allowed
    assert one_shot.delta.shape == (1,)
    with pytest.raises(ValueError, match="no usable episodes"):
        load_critic_episodes([], critic.cameras, 24, 32)


def test_vlac_adapter_says_what_it_needs():
    with pytest.raises(CriticError, match="evo_vlac"):
        make_critic("vlac:/nonexistent/VLAC")


def test_eval_critic_command_writes_json_and_png(tiny_critic, critic_episodes, tmp_path, capsys):
    import json

    from robot_rl.cli import main

    args = ["eval-critic", "--critic", str(tiny_critic), "--json", str(tmp_path / "e.json"), "--plot", str(tmp_path / "e.png")]
    for d in critic_episodes:
        args += ["--data", d]
    assert main(args) == 0
    result = json.loads((tmp_path / "e.json").read_text())
    assert set(result["goals"]) == {"voc >= 0.9", "negative_rate <= 0.1", "voc_f1(success) - voc_f1(failure) >= 0.4",
                                    "done_f1 >= 0.95"}
    assert "VOC" in capsys.readouterr().out and (tmp_path / "e.png").is_file()


def test_empty_and_one_frame_episodes_are_named_not_trained_on(tmp_path):
    from robot_rl.data.episodes import EpisodeMeta, EpisodeWriter

    for n, length in enumerate((0, 1)):
        meta = EpisodeMeta(f"short{n}", "reach_cube", "reach the red cube", 1, False, "policy", ["front"], 24, 32, ["j"], 10.0)
        writer = EpisodeWriter(tmp_path, meta)
        for _ in range(length):
            writer.add({"front": np.zeros((24, 32, 3), np.uint8)}, [0.0], [0.0], 0.0)
        writer.finish(False)
    with pytest.raises(ValueError, match=r"2 had fewer than 2 frames \(short0, short1\)"):
        load_critic_episodes(str(tmp_path), ["front"], 24, 32)
