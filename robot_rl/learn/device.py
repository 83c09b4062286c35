"""Where the learner and behaviour cloning compute: ``device: auto | cpu | cuda | cuda:N``.

``auto`` takes the GPU when PyTorch sees one and the CPU otherwise, so the same config runs on a
laptop, in CI and on a GPU box. Under ``torchrun`` each rank takes its own GPU, ``cuda:LOCAL_RANK``
(``cuda`` without an index means that too), and the ranks average gradients over NCCL; on the CPU
they use gloo. A GPU asked for by name on a machine without one is an error, never a silent
fall-back to the CPU: a run that was meant to take minutes should not quietly take hours.

Only the computation moves. Episodes, the demo buffer, the stored versions and everything written
to disk or sent to robots stay on the CPU (``VersionStore`` and ``state_bytes`` copy to the CPU), so
checkpoints and published weights are the same whichever device trained them, and a run checkpointed
on a GPU resumes on a CPU.
"""

from __future__ import annotations

import os

import torch


def resolve_device(spec: str, *, cuda_available: bool | None = None, cuda_count: int | None = None,
                   local_rank: int | None = None, what: str = "device") -> torch.device:
    """The ``torch.device`` that ``spec`` names on this machine (``what`` names the setting in errors).

    ``cuda_available``, ``cuda_count`` and ``local_rank`` default to what PyTorch and ``torchrun``'s
    ``LOCAL_RANK`` say; tests pass them to check the rules without a GPU."""
    if cuda_available is None:
        cuda_available = torch.cuda.is_available()
    if cuda_count is None:
        cuda_count = torch.cuda.device_count() if cuda_available else 0
    if local_rank is None:
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    text = str(spec).strip().lower()
    if text == "auto":
        text = "cuda" if cuda_available else "cpu"
    if text == "cpu":
        return torch.device("cpu")
    if text == "cuda" or text.startswith("cuda:"):
        if not cuda_available:
            raise ValueError(f"{what} '{spec}': PyTorch sees no CUDA GPU on this machine (torch {torch.__version__}, "
                             f"CUDA build {torch.version.cuda or 'none'}); use 'cpu' or 'auto'")
        if text == "cuda":
            index = local_rank  # one GPU per torchrun rank; 0 for a single learner
        else:
            try:
                index = int(text.split(":", 1)[1])
            except ValueError:
                raise ValueError(f"{what} '{spec}': expected 'cuda:N' with N a GPU index") from None
        if not 0 <= index < cuda_count:
            raise ValueError(f"{what} '{spec}': GPU {index} asked for (local rank {local_rank}), this machine has "
                             f"{cuda_count}; torchrun's --nproc-per-node must not exceed the GPUs")
        return torch.device("cuda", index)
    raise ValueError(f"{what} '{spec}': expected auto, cpu, cuda or cuda:N")


def process_group_backend(device: torch.device) -> str:
    """torch.distributed's backend for ranks that compute on ``device``: NCCL between GPUs, gloo on CPUs."""
    return "nccl" if device.type == "cuda" else "gloo"


def model_device(model: torch.nn.Module) -> torch.device:
    """The device a model's parameters live on (the CPU for a model without any)."""
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def to_device(value, device: torch.device):
    """``value`` (a tensor, or a dict, tuple or list of them; None passes) on ``device``; tensors already
    there are returned as they are (on the CPU nothing is copied)."""
    if value is None:
        return None
    if isinstance(value, torch.Tensor):
        return value if value.device == device else value.to(device)
    if isinstance(value, dict):
        return {k: to_device(v, device) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return type(value)(to_device(v, device) for v in value)
    return value
