#!/usr/bin/env bash
# Idempotent set-up of the lerobot environment (.venv-lerobot): lerobot with the torch it pins, and
# robot_rl itself without its dependencies, and the ROS 2 wheels: the LeRobot converter needs only the
# episode format, robot_driver_node for a LeRobot arm needs rclpy and the Feetech/Dynamixel SDKs.
# Called by `make lerobot-env` (and so `make test-lerobot`) only when its inputs changed.
set -euo pipefail
VENV=${LEROBOT_VENV:-.venv-lerobot}
PYTHON=${PYTHON:-python3}
NEEDED_GB=${LEROBOT_ENV_GB:-13}  # measured: 8.5 GB installed, about 4.5 GB more while pip unpacks (README, Quick start)
if [ ! -f "$VENV/.setup-stamp" ]; then
  parent=$(dirname "$(realpath -m "$VENV")"); [ -d "$parent" ] || parent=.
  free_kb=$(df -Pk "$parent" | awk 'NR == 2 {print $4}')
  if [ -n "$free_kb" ] && [ "$free_kb" -lt $((NEEDED_GB * 1024 * 1024)) ]; then
    echo "warning: $((free_kb / 1024)) MB free for $VENV; lerobot's torch with its CUDA wheels needs about ${NEEDED_GB} GB" \
         "while it installs: the install may stop with 'No space left on device'" >&2
  fi
fi
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
# no wheel cache: the CUDA wheels would be on disk twice (the cache and the environment)
PIP="$VENV/bin/python -m pip --no-cache-dir"
$PIP install -q --disable-pip-version-check -r requirements/lerobot.txt
$PIP install -q --disable-pip-version-check --no-deps -e .
HF_HUB_OFFLINE=1 "$VENV/bin/python" -c "import lerobot, torch, rclpy, scservo_sdk, dynamixel_sdk; from lerobot.datasets.lerobot_dataset import LeRobotDataset; print('lerobot environment ready: lerobot', lerobot.__version__, 'torch', torch.__version__)"
