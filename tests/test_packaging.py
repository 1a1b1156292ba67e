"""What the package says about itself, as pip and PyPI read it from the installed metadata:
one version (package.json's) for the Python and the npm package, the licence, the URLs."""

from __future__ import annotations

import importlib.metadata
import json
import pathlib

import jupyter_burst

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_one_version_the_licence_and_the_project_urls_are_in_the_metadata():
    package_json = json.loads((REPO / "package.json").read_text())
    metadata = importlib.metadata.metadata("jupyter-burst")
    assert metadata["Version"] == package_json["version"] == jupyter_burst.__version__
    licence = (REPO / "LICENSE").read_text()
    assert licence.startswith("BSD 3-Clause License") and package_json["license"] == "BSD-3-Clause"
    assert metadata["License"].startswith("BSD 3-Clause License")
    urls = dict(u.split(", ", 1) for u in metadata.get_all("Project-URL"))
    assert set(urls) >= {"Homepage", "Source", "Bug Tracker"}
    assert urls["Source"] == package_json["repository"]["url"].removeprefix("git+").removesuffix(
        ".git"
    )
    assert package_json["bugs"]["url"] == urls["Bug Tracker"]
