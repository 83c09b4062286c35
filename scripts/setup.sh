#!/usr/bin/env bash
# Idempotent set-up of the pip-only environment: Debian libraries, .venv, Python packages.
# Called by `make setup` (and so by `make demo` / `make test`) only when its inputs changed.
set -euo pipefail
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}

# Debian packages: EGL/GL (Mesa) for offscreen MuJoCo rendering, libusb for librealsense.
DEBS="libegl1 libgl1 libgles2 libegl-mesa0 libgl1-mesa-dri libusb-1.0-0"
missing=""
for pkg in $DEBS; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing="$missing $pkg"
done
if [ -n "$missing" ]; then
  echo "installing Debian packages:$missing"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing
fi

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP="$VENV/bin/python -m pip --no-cache-dir"  # no wheel cache: the packages would be on disk twice
# torch first and alone, so nothing later resolves it to a CUDA build.
$PIP install -q --disable-pip-version-check torch==2.13.0
$PIP install -q --disable-pip-version-check -r requirements/base.txt -r requirements/pip-ros.txt -r requirements/test.txt -r requirements/hardware.txt -r requirements/data.txt
$PIP install -q --disable-pip-version-check --no-deps -e .
"$VENV/bin/python" -c "import rclpy, mujoco, torch, onnxruntime, zmq; print('robot_rl environment ready: torch', torch.__version__, 'mujoco', mujoco.__version__)"
