"""The version, from one source: package.json's, which the build puts in the package's
metadata (``[tool.hatch.version] source = "nodejs"``). A checkout that was never installed
reads package.json itself."""

import json
import pathlib
from importlib.metadata import PackageNotFoundError, version


def _version() -> str:
    try:
        return version("jupyter-burst")
    except PackageNotFoundError:
        package_json = pathlib.Path(__file__).resolve().parents[1] / "package.json"
        return json.loads(package_json.read_text())["version"]


__version__ = _version()
