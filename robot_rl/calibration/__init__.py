"""Calibration: camera intrinsics (checkerboard), hand-eye extrinsics, and the files that hold them."""
