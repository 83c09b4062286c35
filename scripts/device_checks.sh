#!/usr/bin/env bash
# The GPU checks of issues 3 and 5 as one prepared script, for a machine with a GPU and no network.
#
#   bash scripts/device_checks.sh prepare      # here (registries reachable): wheels and GL libraries
#   bash scripts/device_checks.sh run [OUT]    # there: every check, results as JSON and logs in OUT
#
# `prepare` fills two git-ignored folders that `run` needs on the GPU machine (carry them there):
#   .whl/  Python 3.12 wheels of what the bare GPU image lacks: MuJoCo 3.3.7 (real observations for
#          the benches) and its glfw and PyOpenGL; installed with pip --no-index into /tmp/site.
#   .gl/   Debian's EGL/GL loader packages, unpacked there so MuJoCo renders offscreen on the GPU.
# The GPU image already holds PyTorch with CUDA, onnx, onnxruntime (CPU), safetensors, msgpack, tqdm,
# tensorboard, matplotlib and pyyaml; it has no TensorRT (the JSON then says so per backend). Neither
# bench needs the sentence encoder (the exports carry their instructions' embeddings) or ZeroMQ.
#
# `run` (a few minutes on an H100 machine, not yet measured; each step has its own time limit and a failing step
# does not stop the others):
#   1. nvidia-smi and the Python/PyTorch versions                        -> OUT/machine.txt
#   2. robot-rl bench inference: PyTorch eager FP32/FP16/BF16, the BF16 CUDA graph, ONNX Runtime,
#      TensorRT where installed, for the default policy and the 106M-parameter reference
#      (issue 3's goal: the accelerated path >= 4x eager FP32 at batch 1)  -> OUT/inference-gpu.json
#   3. robot-rl bench learner --devices cpu,cuda: one learner update with the HIL arm's settings on
#      the same batch per device, speed-up and weight agreement (issue 5)  -> OUT/learner-gpu.json
# Every step's output also goes to OUT/checks.log. Locally (no GPU) `run` exercises the same
# commands on the CPU: `PYTHON=.venv/bin/python bash scripts/device_checks.sh run /tmp/device-out`.
set -uo pipefail
cd "$(dirname "$0")/.."

mode="${1:-}"
PYTHON="${PYTHON:-python3}"
WHEELS=(mujoco==3.3.7 glfw==2.11.0 pyopengl==3.1.10)
GL_DEBS=(libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2)

prepare() {
    for d in .whl .gl; do grep -qxF "/$d/" .git/info/exclude 2>/dev/null || echo "/$d/" >> .git/info/exclude; done
    mkdir -p .whl .gl
    "$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 -d .whl "${WHEELS[@]}" || return 1
    local apt_opts=(-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64)
    mkdir -p /tmp/amd64/partial
    apt-get "${apt_opts[@]}" update -qq && (cd .gl && apt-get "${apt_opts[@]}" download "${GL_DEBS[@]}") || return 1
    du -sh .whl .gl
    echo "prepared: run there with carry [\".whl\", \".gl\"]: bash scripts/device_checks.sh run \$OUT"
}

step() {  # step NAME SECONDS COMMAND...: run one check with a time limit, log it, never stop the script
    local name="$1" limit="$2"
    shift 2
    echo "=== $name (limit ${limit}s): $*" | tee -a "$OUT/checks.log"
    local t0=$SECONDS
    timeout "$limit" "$@" 2>&1 | tee -a "$OUT/checks.log"
    local rc=${PIPESTATUS[0]}
    echo "=== $name: rc $rc in $((SECONDS - t0)) s" | tee -a "$OUT/checks.log"
}

run() {
    OUT="${1:-${OUT:-device-out}}"
    mkdir -p "$OUT"
    : > "$OUT/checks.log"
    if ! "$PYTHON" -c "import mujoco" 2>/dev/null; then
        [ -d .whl ] || { echo "MuJoCo is missing and there is no .whl/ folder: run 'prepare' here and carry .whl" >&2; exit 2; }
        "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 2
        export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
    fi
    if [ -d .gl ] && ls .gl/*.deb >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        for f in .gl/*.deb; do dpkg -x "$f" /; done
        ldconfig
    fi
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" MUJOCO_GL="${MUJOCO_GL:-egl}" PYTHONUNBUFFERED=1
    {
        nvidia-smi 2>&1 || echo "no nvidia-smi"
        "$PYTHON" -c "import platform, torch; print('python', platform.python_version(), 'torch', torch.__version__, 'cuda', torch.cuda.is_available() and torch.cuda.get_device_name())"
        nproc
    } > "$OUT/machine.txt" 2>&1
    cat "$OUT/machine.txt" >> "$OUT/checks.log"
    local cli=("$PYTHON" -m robot_rl.cli)
    step "bench inference" 240 "${cli[@]}" bench inference --json "$OUT/inference-gpu.json"
    local devices=cpu
    "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" && devices=cpu,cuda
    step "bench learner" 240 "${cli[@]}" bench learner --devices "$devices" --repeats 5 --json "$OUT/learner-gpu.json"
    echo "results in $OUT: $(ls "$OUT" | tr '\n' ' ')"
}

case "$mode" in
    prepare) prepare ;;
    run) shift; run "$@" ;;
    *) echo "usage: bash scripts/device_checks.sh prepare | run [OUT]" >&2; exit 2 ;;
esac
