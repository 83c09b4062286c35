import numpy as np
import pytest

from robot_rl.sim.tabletop import JOINT_NAMES, TabletopWorld
from robot_rl.sim.tasks import TASKS, UnknownTaskError, get_task
from robot_rl.sim.world import WorldConfig


@pytest.fixture(scope="module")
def world():
    w = TabletopWorld(WorldConfig(image_width=64, image_height=48))
    yield w
    w.close()


def rollout(world, seed, task, commands):
    world.reset(seed, task)
    states = []
    for c in commands:
        world.step(c)
        states.append(np.concatenate([world.joint_positions(), world.cube_position()]))
    return np.array(states)


def test_same_seed_same_episode_and_other_seed_differs(world):
    rng = np.random.default_rng(3)
    commands = [np.clip(world.joint_positions() + rng.normal(0, 0.2, 6), world.ctrl_low, world.ctrl_high) for _ in range(15)]
    a = rollout(world, 7, "pick_cube", commands)
    image_a = world.render("front")
    b = rollout(world, 7, "pick_cube", commands)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(image_a, world.render("front"))
    world.reset(8, "pick_cube")
    assert np.linalg.norm(world.cube_position() - a[0, 6:]) > 1e-3


def test_layout_depends_on_seed_not_task(world):
    world.reset(11, "reach_cube")
    poses = {k: v.position.copy() for k, v in world.object_poses().items()}
    world.reset(11, "press_button")
    for k, v in world.object_poses().items():
        np.testing.assert_allclose(v.position, poses[k])


def test_cameras_render_configured_size(world):
    for cam in ("front", "wrist"):
        image = world.render(cam)
        assert image.shape == (48, 64, 3) and image.dtype == np.uint8
        assert image.std() > 5  # not a blank frame
    model = world.camera_model("front")
    assert (model.width, model.height) == (64, 48) and model.fx > 0


def test_red_cube_is_visible_in_front_camera(world):
    world.reset(0, "pick_cube")
    image = world.render("front").astype(int)
    red = (image[..., 0] > 150) & (image[..., 1] < 80) & (image[..., 2] < 80)
    assert red.sum() > 3


def _lit_pixels(image: np.ndarray) -> int:
    """Pixels of the pressed button's yellow light (nothing else in the scene is yellow)."""
    image = image.astype(int)
    return int(((image[..., 0] > 180) & (image[..., 1] > 150) & (image[..., 2] < 90)).sum())


def test_pressed_button_lights_up_until_reset_and_the_light_survives_snapshots(world):
    from robot_rl.sim.oracle import ScriptedOracle

    world.reset(10000, "press_button")
    oracle = ScriptedOracle.for_scene(world.control_period)
    oracle.reset("press_button")
    assert _lit_pixels(world.render("front")) == 0
    for _ in range(40):
        if world.success():
            break
        world.step(oracle.act(world.joint_positions(), world.object_poses())[0])
    assert world.success()
    for _ in range(8):  # the oracle lifts off: the cap springs back up, the light stays on
        world.step(oracle.act(world.joint_positions(), world.object_poses())[0])
    assert world.button_travel() < 0.004 and world.success()
    assert _lit_pixels(world.render("front")) >= 2 and _lit_pixels(world.render("wrist")) >= 10
    state = world.snapshot()
    world.reset(10000, "press_button")
    assert _lit_pixels(world.render("front")) == 0 and _lit_pixels(world.render("wrist")) == 0
    world.restore(state)
    assert world.success() and _lit_pixels(world.render("front")) >= 2


def test_no_task_succeeds_at_reset(world):
    for seed in range(5):
        for task in TASKS:
            world.reset(seed, task)
            assert world.success() is False, (seed, task)


def test_bad_inputs_are_refused_with_clear_errors(world):
    with pytest.raises(ValueError, match="finite joint targets"):
        world.step(np.full(6, np.nan))
    with pytest.raises(ValueError, match="6 finite"):
        world.step(np.zeros(3))
    with pytest.raises(ValueError, match="unknown camera 'top'"):
        world.render("top")
    with pytest.raises(UnknownTaskError, match="stack the blocks"):
        world.reset(0, "stack the blocks")
    with pytest.raises(ValueError, match="camera 'side' is not in scene"):
        TabletopWorld(WorldConfig(cameras=["side"]))


def test_instructions_are_normalised():
    assert get_task("  Pick up the red cube. ").name == "pick_cube"
    assert get_task("press_button").instruction == "press the blue button"


def test_joint_names_follow_so101_convention(world):
    assert world.joint_names == JOINT_NAMES
    assert world.joint_positions().shape == (6,)
