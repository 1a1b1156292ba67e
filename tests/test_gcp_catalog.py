"""The shipped GCP catalog (clusters/catalog/gcp.yaml) and what each name in it asks Compute
Engine for (clusters/gcp/shapes.py)."""

from __future__ import annotations

import pytest

from jupyter_burst.clusters.gcp.shapes import Shape, shape
from jupyter_burst.clusters.offers import OfferRequest
from jupyter_burst.clusters.plans import cheapest
from jupyter_burst.clusters.shipped_catalog import load_catalog, read_catalog
from jupyter_burst.errors import ClusterError


def test_every_catalog_entry_is_a_machine_compute_engine_knows_with_as_many_gpus():
    when, offers = load_catalog("gcp")
    assert offers and "NEITHER IS VERIFIED" in read_catalog("gcp")["source"]
    for offer in offers:
        asked = shape(offer.instance_type)
        assert asked.count == offer.gpus, offer
        assert 0.1 < offer.price_per_hour / offer.gpus < 12, offer  # $/GPU-hour, sane
    assert shape("n1-standard-16+t4x2") == Shape("n1-standard-16", "nvidia-tesla-t4", 2, True)
    assert shape("a3-highgpu-8g") == Shape("a3-highgpu-8g", "nvidia-h100-80gb", 8, False)
    assert shape("g2-standard-24") == Shape("g2-standard-24", "nvidia-l4", 2, False)


def test_the_catalog_answers_a_request_and_an_unknown_name_is_one_line():
    _, offers = load_catalog("gcp")
    # Eight 80 GiB GPUs: one a2-ultragpu-8g, not eight 1-GPU machines at the same price.
    plan = cheapest(offers, OfferRequest(gpus=8, gpu_mem_gib=80))
    assert (plan.offer.instance_type, plan.nodes) == ("a2-ultragpu-8g", 1)
    assert cheapest(offers, OfferRequest(gpus=1)).offer.instance_type == "n1-standard-4+t4x1"
    with pytest.raises(ClusterError, match="^burst: 'n2-standard-8' is no GCP GPU machine we know"):
        shape("n2-standard-8")
    with pytest.raises(ClusterError, match="no GCP GPU machine"):
        shape("n1-standard-8+k80x1")  # retired: not attachable any more
