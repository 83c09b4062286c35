# Pip-only set-up and the two everyday commands. On a ROS 2 machine use colcon instead (README).
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.setup-stamp
export MUJOCO_GL ?= egl
export ROS_AUTOMATIC_DISCOVERY_RANGE ?= LOCALHOST

.PHONY: setup demo test bench clean lerobot-env test-lerobot

setup: $(STAMP)

# Re-run the set-up only when what it installs from changed: seconds when already done.
$(STAMP): setup.py package.xml requirements/base.txt requirements/pip-ros.txt requirements/test.txt requirements/hardware.txt requirements/data.txt scripts/setup.sh
	VENV=$(VENV) bash scripts/setup.sh
	touch $@

demo: setup
	$(VENV)/bin/robot-rl demo --policy vla --seed 10000

test: setup
	$(PY) -m pytest

# LeRobotDataset export/import: lerobot pins an older torch, so it has its own environment and tests.
LEROBOT_VENV  ?= .venv-lerobot
LEROBOT_STAMP := $(LEROBOT_VENV)/.setup-stamp

lerobot-env: $(LEROBOT_STAMP)

$(LEROBOT_STAMP): setup.py requirements/lerobot.txt requirements/pip-ros.txt scripts/setup-lerobot.sh
	LEROBOT_VENV=$(LEROBOT_VENV) bash scripts/setup-lerobot.sh
	touch $@

test-lerobot: setup lerobot-env
	HF_HUB_OFFLINE=1 $(LEROBOT_VENV)/bin/python -m pytest -c tests_lerobot/pytest.ini tests_lerobot

bench: setup
	$(VENV)/bin/robot-rl bench loop --json bench-results/loop.json

clean:
	rm -rf $(VENV) $(LEROBOT_VENV) build *.egg-info
