"""Providers are plugins, found through the entry-point group ``jupyter_burst.providers``.

A cache first, then the entry points; an unknown name is refused with the list of known ones.
"""

from __future__ import annotations

from importlib.metadata import entry_points

from jupyter_burst.clusters.provider import Provider
from jupyter_burst.errors import OptionError

GROUP = "jupyter_burst.providers"
_BUILTIN = {
    "local": "jupyter_burst.clusters.local:LocalProvider",
    "aws": "jupyter_burst.clusters.aws:AwsProvider",
    "ssh": "jupyter_burst.clusters.ssh:SshProvider",
    "lambda": "jupyter_burst.clusters.lambda_cloud:LambdaProvider",
    "gcp": "jupyter_burst.clusters.gcp:GcpProvider",
}
_cache: dict[str, Provider] = {}


def _entry_points() -> dict[str, str]:
    found = dict(_BUILTIN)
    for ep in entry_points(group=GROUP):
        found[ep.name] = ep.value
    return found


def known_providers() -> list[str]:
    return sorted(_entry_points())


def get_provider(name: str) -> Provider:
    if name in _cache:
        return _cache[name]
    targets = _entry_points()
    if name not in targets:
        raise OptionError(f"unknown provider '{name}'; known: {', '.join(sorted(targets))}")
    module_name, _, attr = targets[name].partition(":")
    import importlib

    factory = getattr(importlib.import_module(module_name), attr)
    provider = _cache[name] = factory()
    return provider
