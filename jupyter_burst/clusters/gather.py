"""The enabled providers (``burst.providers``), their offers for a request, and where their
prices come from."""

from __future__ import annotations

from collections.abc import Sequence

from jupyter_burst import config
from jupyter_burst.clusters import registry
from jupyter_burst.clusters.offers import Offer, OfferRequest
from jupyter_burst.clusters.provider import Provider
from jupyter_burst.clusters.shipped_catalog import has_catalog, load_catalog
from jupyter_burst.errors import OptionError


def enabled_providers() -> list[str]:
    """The names in ``burst.providers`` (a list; a comma-separated string from the environment)."""
    return list(config.names("providers", ["local"]))


def gather(request: OfferRequest) -> list[Offer]:
    """Every enabled provider's offers for ``request``; a provider without ``offers`` is skipped."""
    found: list[Offer] = []
    for name in enabled_providers():
        ask = getattr(enabled_provider(name), "offers", None)
        if ask is not None:
            found.extend(ask(request))
    return found


def enabled_provider(name: str) -> Provider:
    """The provider ``name`` of ``burst.providers``; an unknown one is refused as that setting's."""
    try:
        return registry.get_provider(name)
    except OptionError as exc:
        raise OptionError(f"burst.providers: {str(exc).removeprefix('burst: ')}") from None


def price_notes(names: Sequence[str]) -> list[str]:
    """Where each provider's prices come from: its own word, else its shipped catalog's date."""
    notes = []
    for name in names:
        provider = enabled_provider(name)
        if getattr(provider, "offers", None) is None:
            continue
        note = getattr(provider, "prices_note", None)
        note = note() if callable(note) else note
        if note:
            notes.append(f"{name}: {note}")
        elif has_catalog(name):
            notes.append(
                f"{name}: on-demand list prices from the shipped catalog of "
                f"{load_catalog(name)[0].isoformat()}"
            )
    return notes
