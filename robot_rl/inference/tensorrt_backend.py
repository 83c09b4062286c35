"""TensorRT backend: an engine built from ``policy.onnx`` and cached beside it.

The engine file is keyed by what makes an engine unportable: the GPU model, the TensorRT version,
the precision and the ONNX file's hash, e.g. ``policy.NVIDIA_H100_80GB_HBM3.trt10.3.0.fp16.<hash>.engine``.
A cached engine that does not match (another GPU, an upgraded TensorRT, a re-exported ONNX) is not
used: the backend says so and builds a new one (minutes on a Jetson, seconds on a desktop GPU).
Device buffers are torch CUDA tensors (torch is part of the learn extra on every GPU machine we
target, including JetPack), so no pycuda is needed.

Verified: the code path needs the ``tensorrt`` Python package and a CUDA GPU; CI has neither (see
README, "What is verified where").
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np

from robot_rl.inference.backends import BackendError, InferenceBackend

MAX_BATCH = 8


def _onnx_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


def engine_path(onnx: Path, gpu_name: str, trt_version: str, fp16: bool) -> Path:
    gpu = re.sub(r"[^A-Za-z0-9]+", "_", gpu_name).strip("_")
    return onnx.with_name(f"{onnx.stem}.{gpu}.trt{trt_version}.{'fp16' if fp16 else 'fp32'}.{_onnx_hash(onnx)}.engine")


class TensorRTBackend(InferenceBackend):
    name = "tensorrt"

    def __init__(self, export_dir: str | Path, metadata: dict, fp16: bool = True, log=print):
        super().__init__(metadata)
        try:
            import tensorrt as trt
        except ImportError as exc:
            raise BackendError("the tensorrt backend needs the tensorrt package (pip install .[tensorrt]; "
                               "on Jetson it comes with JetPack)") from exc
        import torch

        if not torch.cuda.is_available():
            raise BackendError("the tensorrt backend needs a CUDA GPU; none is visible to torch")
        self.trt, self.torch = trt, torch
        onnx = Path(export_dir) / metadata.get("onnx_file", "policy.onnx")
        if not onnx.is_file():
            raise FileNotFoundError(f"{onnx} does not exist")
        self.logger = trt.Logger(trt.Logger.WARNING)
        gpu = torch.cuda.get_device_name()
        self.device = f"cuda:{gpu}"
        path = engine_path(onnx, gpu, trt.__version__, fp16)
        engine = None
        if path.is_file():
            engine = trt.Runtime(self.logger).deserialize_cuda_engine(path.read_bytes())
            if engine is None:
                log(f"cached TensorRT engine {path.name} does not load with TensorRT {trt.__version__}: rebuilding")
        else:
            stale = sorted(onnx.parent.glob(f"{onnx.stem}.*.engine"))
            if stale:
                log(f"TensorRT engines {[p.name for p in stale]} are for another GPU, TensorRT version, precision or "
                    f"ONNX file; building {path.name}")
        if engine is None:
            serialized = self._build(onnx, fp16)
            path.write_bytes(serialized)
            engine = trt.Runtime(self.logger).deserialize_cuda_engine(serialized)
        self.engine = engine
        self.engine_file = path
        self.context = engine.create_execution_context()
        self.stream = torch.cuda.Stream()
        self.dtypes = {self.engine.get_tensor_name(i): self.engine.get_tensor_dtype(self.engine.get_tensor_name(i))
                       for i in range(self.engine.num_io_tensors)}

    def _build(self, onnx: Path, fp16: bool) -> bytes:
        trt = self.trt
        builder = trt.Builder(self.logger)
        network = builder.create_network(0)
        parser = trt.OnnxParser(network, self.logger)
        if not parser.parse(onnx.read_bytes()):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise BackendError(f"TensorRT cannot parse {onnx}: {errors}")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, 1 << 30)
        if fp16 and builder.platform_has_fast_fp16:
            config.set_flag(trt.BuilderFlag.FP16)
        profile = builder.create_optimization_profile()
        for spec in self.metadata["inputs"]:
            shape = [d if isinstance(d, int) else 1 for d in spec["shape"]]
            profile.set_shape(spec["name"], [1, *shape[1:]], [1, *shape[1:]], [MAX_BATCH, *shape[1:]])
        config.add_optimization_profile(profile)
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise BackendError(f"TensorRT failed to build an engine from {onnx} (see the TensorRT log above)")
        return bytes(serialized)

    def run(self, inputs):
        torch = self.torch
        batch = next(iter(inputs.values())).shape[0]
        if batch > MAX_BATCH:
            raise ValueError(f"tensorrt backend: batch {batch} exceeds the engine's maximum {MAX_BATCH}")
        keep = []
        with torch.cuda.stream(self.stream):
            for name in self.input_names:
                t = torch.from_numpy(np.ascontiguousarray(inputs[name])).cuda(non_blocking=True)
                self.context.set_input_shape(name, tuple(t.shape))
                self.context.set_tensor_address(name, t.data_ptr())
                keep.append(t)
            outputs = {}
            for name in self.output_names:
                shape = tuple(self.context.get_tensor_shape(name))
                dtype = torch.float16 if self.dtypes[name] == self.trt.DataType.HALF else torch.float32
                out = torch.empty(shape, dtype=dtype, device="cuda")
                self.context.set_tensor_address(name, out.data_ptr())
                outputs[name] = out
            if not self.context.execute_async_v3(self.stream.cuda_stream):
                raise RuntimeError("TensorRT execution failed")
        self.stream.synchronize()
        return {k: v.float().cpu().numpy() for k, v in outputs.items()}
