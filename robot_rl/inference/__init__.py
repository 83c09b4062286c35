"""Inference backends (torch, onnxruntime, tensorrt) behind one interface, and policy export."""
