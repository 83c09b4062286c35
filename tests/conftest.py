"""Test isolation: each test run gets its own ROS domain, discovery stays on this machine, MuJoCo
renders offscreen with EGL. Set before anything imports rclpy."""

import os
import sys

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ["ROS_DOMAIN_ID"] = str(10 + os.getpid() % 90)

import pytest  # noqa: E402

# A tiny VLA trained for a few steps on a few oracle demos: shared by the data, learn, inference and
# policy tests (collecting, training and exporting once per test session keeps the suite fast).
TINY_MODEL = {"chunk_length": 4, "cnn_channels": [8, 16], "image_features": 16, "hidden": 64, "action_mode": "delta"}


@pytest.fixture(scope="session")
def encoder():
    from robot_rl.policy.text import InstructionEncoder

    return InstructionEncoder()


@pytest.fixture(scope="session")
def tiny_demos(tmp_path_factory):
    from robot_rl.data.collect import CollectConfig, collect

    out = tmp_path_factory.mktemp("demos")
    collect(CollectConfig(out=str(out), episodes=2, image_width=32, image_height=24))
    return out


@pytest.fixture(scope="session")
def tiny_checkpoint(tiny_demos, tmp_path_factory, encoder):
    from robot_rl.learn.bc import BCConfig, train_bc

    out = tmp_path_factory.mktemp("bc") / "tiny.pt"
    # whole episodes: the learner tests' expectations (decision counts, data-parallel rounding) were
    # measured with this tiny policy, and cutting its 2 demonstrations per task changes its behaviour
    metrics = train_bc(BCConfig(data=str(tiny_demos), out=str(out), steps=100, batch_size=16, lr=2e-3, checkpoint_every=50,
                                shift_pad=2, until_success=False, model=dict(TINY_MODEL)), encoder=encoder, progress=False, log=lambda *_: None)
    return out, metrics


@pytest.fixture(scope="session")
def tiny_export(tiny_checkpoint, tmp_path_factory):
    from robot_rl.inference.export import export_policy

    out = tmp_path_factory.mktemp("export") / "tiny_policy"
    export_policy(str(tiny_checkpoint[0]), str(out), log=lambda *_: None)
    return out


@pytest.fixture(scope="session")
def tiny_cartesian_export(tiny_demos, tmp_path_factory, encoder):
    """The tiny VLA in the cartesian action mode (policy/arm_frame.py): (checkpoint, training metrics, export)."""
    from robot_rl.inference.export import export_policy
    from robot_rl.learn.bc import BCConfig, train_bc

    out = tmp_path_factory.mktemp("bc_cartesian")
    metrics = train_bc(BCConfig(data=str(tiny_demos), out=str(out / "tiny.pt"), steps=60, batch_size=16, lr=2e-3,
                                shift_pad=2, model={**TINY_MODEL, "action_mode": "cartesian"}),
                       encoder=encoder, progress=False, log=lambda *_: None)
    export_policy(str(out / "tiny.pt"), str(out / "policy"), log=lambda *_: None)  # fails above the parity tolerance
    return out / "tiny.pt", metrics, out / "policy"


# A tiny progress critic trained for a few steps on oracle, noisy and random episodes at 32x24 (shared
# by the reward tests). Seeds 0..5: seeds 0 and 5 are held out (seed % 5 == 0), the rest train; the
# random walk (seed 0, held out) always fails.
TINY_CRITIC = {"image_height": 24, "image_width": 32, "cnn_channels": [8, 16, 32], "image_features": 32, "hidden": 64}


@pytest.fixture(scope="session")
def critic_episodes(tmp_path_factory):
    from robot_rl.data.collect import CollectConfig, collect

    out = tmp_path_factory.mktemp("critic_episodes")
    for behaviour, episodes in (("oracle", 6), ("noisy", 6), ("random", 1)):
        collect(CollectConfig(out=str(out / behaviour), tasks=["reach_cube", "pick_cube"], episodes=episodes, image_width=32,
                              image_height=24, behaviour=behaviour, keep_failures=True))
    return [str(out / "oracle"), str(out / "noisy"), str(out / "random")]


@pytest.fixture(scope="session")
def tiny_critic(critic_episodes, tmp_path_factory, encoder):
    from robot_rl.reward.train import CriticTrainConfig, train_critic

    out = tmp_path_factory.mktemp("critic") / "tiny_critic.pt"
    train_critic(CriticTrainConfig(data=critic_episodes, out=str(out), steps=300, batch_size=32, lr=2e-3,
                                   checkpoint_every=100, model=dict(TINY_CRITIC)), encoder=encoder, progress=False,
                 log=lambda *_: None)
    return out



_session_status = {}


def pytest_sessionfinish(session, exitstatus):
    _session_status["code"] = int(exitstatus)


def pytest_unconfigure(config):
    """Leave without C++ static destructors once pyrealsense2 ran, keeping pytest's exit status.

    librealsense 2.59 segfaults in its exit-time teardown in a process where software devices ran next
    to rclpy, after every result has been reported (exit 139 with all tests passed). Skipping the
    teardown changes no result: the summary is printed and the status is pytest's own.
    """
    if "pyrealsense2" in sys.modules and "code" in _session_status:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_session_status["code"])
