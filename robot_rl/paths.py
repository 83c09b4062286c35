"""Locate the package's data directories (sim/, config/, calibration/, launch/, policies/).

Three layouts are supported, tried in this order:
1. a ROS install (colcon): the ament index knows ``share/robot_rl``;
2. a pip install: ``setup.py`` copies the data files to ``<prefix>/share/robot_rl``;
3. a source checkout (editable install, tests): the repository root next to this package.
"""

from __future__ import annotations

import os
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any

PACKAGE = "robot_rl"
_REPO_ROOT = Path(__file__).resolve().parent.parent


def _looks_like_share(path: Path) -> bool:
    return (path / "package.xml").is_file() and (path / "sim").is_dir()


@lru_cache(maxsize=None)
def share_dir(package: str = PACKAGE) -> Path:
    """The directory that holds the package's data files, like ``$(find-pkg-share robot_rl)``."""
    if package == PACKAGE and _looks_like_share(_REPO_ROOT):
        # A source checkout wins: edits to config/ and sim/ take effect without reinstalling.
        return _REPO_ROOT
    try:  # a sourced ROS workspace
        from ament_index_python.packages import get_package_share_directory

        return Path(get_package_share_directory(package))
    except Exception:  # noqa: BLE001 - ament index absent or package not registered
        pass
    for prefix in (sys.prefix, os.environ.get("VIRTUAL_ENV", "")):
        candidate = Path(prefix) / "share" / package
        if prefix and candidate.is_dir():
            return candidate
    raise FileNotFoundError(
        f"cannot find the share directory of package '{package}': not a source checkout, "
        f"not in the ament index and not under {sys.prefix}/share"
    )


def data_path(*parts: str) -> Path:
    """A path inside the package share directory, e.g. ``data_path('sim', 'tabletop.xml')``."""
    return share_dir().joinpath(*parts)


def load_yaml_file(path: Path, what: str, error: type[Exception]) -> Any:
    """The YAML document in ``path``; ``error`` naming ``what`` ("launch file", "robot limits file")
    and the path when the file is missing or is not YAML. The caller checks the document's shape."""
    import yaml

    if not path.is_file():
        raise error(f"{what} {path} does not exist")
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise error(f"{what} {path} is not valid YAML: {exc}") from exc
