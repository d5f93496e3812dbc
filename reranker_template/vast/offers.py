"""Offers: which machines can serve the model, and finding them.

Units. Vast's `gpu_ram` (in offers and in filters) is MiB, what the card reports; everything here keeps
MiB (`*_mib`, whole numbers). Conversions happen only where a number comes in or goes out:
- A user's "GB" (`--min-gpu-ram`, the 16 GB floor) is a card's marketed size, read as `vastai search`
  reads it: x1000. A card sold as N GB reports a little under N GiB (an RTX A4000, "16 GB": 16376 MiB;
  an RTX 4090, "24 GB": 24564 MiB), so x1024 would leave out the very cards asked for.
- The model's need is GiB (from the plan's memory model): x1024, rounded up, and shown as GiB.
- A card's memory is shown as its marketed size: MiB / 1024, rounded ("24 GB").
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from reranker_template.errors import OfferGone, VastError
from reranker_template.facts.model import inspect_model
from reranker_template.plan.memory import required_gpu_memory_gib, valid_tp_sizes
from reranker_template.settings import is_local_path
from reranker_template.vast.api import VastApi, vast_call

DEFAULT_DISK_GB = 40.0
# Turing (7.5) or newer: what vLLM's CUDA build supports.
MIN_COMPUTE_CAP = 750
# Vast's own vLLM template learned this: cheap hosts below it often could not download models.
MIN_RELIABILITY = 0.95
# Per GPU, not in total (multi-GPU boxes of small cards ran out of memory). 16 GB is what Vast's
# reranker guide and vLLM template ask for; a bigger model raises it (see `gpu_ram_filter`).
DEFAULT_MIN_GPU_RAM_GB = 16.0


def marketed_gb_to_mib(gb: float) -> int:
    """The `gpu_ram` floor for a card sold as `gb` GB (x1000, as `vastai search` reads GB)."""
    return round(gb * 1000)


def mib_to_query_gb(mib: float) -> float:
    """A `gpu_ram` floor in Vast's query syntax ("gpu_ram>=16"), which reads GB as marketed_gb_to_mib writes them."""
    return round(mib / 1000, 1)


def gib_to_mib(gib: float) -> int:
    return math.ceil(gib * 1024)


def mib_to_marketed_gb(mib: float) -> float:
    """A card's reported MiB as the GB it is sold as (24564 MiB: 24 GB)."""
    return mib / 1024


@dataclass(frozen=True)
class GpuRamFilter:
    """The per-GPU memory filter: the floor, how to show it to the user, and why it has that value."""

    min_mib: int
    shown: str  # in the unit it came in: "16 GB" (a user's or the default) or "17.6 GiB" (the model's need)
    reason: str


def gpu_ram_filter(model_need_gib: float | None, user_min_gb: float | None) -> GpuRamFilter:
    """The user's --min-gpu-ram, else the model's need per GPU, but never below the 16 GB floor."""
    if user_min_gb is not None:
        return GpuRamFilter(marketed_gb_to_mib(user_min_gb), f"{user_min_gb:g} GB", "--min-gpu-ram")
    floor_mib, floor = marketed_gb_to_mib(DEFAULT_MIN_GPU_RAM_GB), f"{DEFAULT_MIN_GPU_RAM_GB:g} GB"
    if model_need_gib is None:
        return GpuRamFilter(floor_mib, floor, f"the {floor} default: the model's size is unknown")
    need_mib = gib_to_mib(model_need_gib)
    if need_mib > floor_mib:
        return GpuRamFilter(need_mib, f"{model_need_gib:.1f} GiB", "what the model needs per GPU")
    return GpuRamFilter(floor_mib, floor, f"the {floor} minimum; the model needs {model_need_gib:.1f} GiB")


def gpu_ram_for_model(model: str, gpus: int, env: Mapping[str, str]) -> GpuRamFilter:
    """The filter for serving `model` on `gpus` GPUs (metadata from a local dir, the HF cache or the hub).

    On N GPUs a model too big for one runs tensor parallel: each GPU then needs only its share.
    """
    info = inspect_model(model, is_local=is_local_path(model), token=env.get("HF_TOKEN"), env=env)
    tp = max(valid_tp_sizes(info, gpus))
    return gpu_ram_filter(required_gpu_memory_gib(info, tensor_parallel_size=tp), None)


@dataclass(frozen=True)
class OfferQuery:
    gpu_ram: GpuRamFilter
    num_gpus: int = 1
    max_price: float | None = None
    limit: int = 10
    disk_gb: float = DEFAULT_DISK_GB

    def filters(self) -> dict[str, Any]:
        """The search filters as Vast's JSON (the SDK adds order, type, limit and allocated_storage)."""
        query: dict[str, Any] = {
            "verified": {"eq": True},
            "external": {"eq": False},
            "rentable": {"eq": True},
            "rented": {"eq": False},
            "compute_cap": {"gte": MIN_COMPUTE_CAP},
            "gpu_ram": {"gte": self.gpu_ram.min_mib},
            "num_gpus": {"eq": self.num_gpus},
            "reliability2": {"gte": MIN_RELIABILITY},
            "direct_port_count": {"gte": 1},
            "static_ip": {"eq": True},
        }
        if self.max_price is not None:
            query["dph_total"] = {"lte": self.max_price}
        return query

    def describe(self) -> str:
        """The filters in words, each with its unit and, for the memory, why."""
        price = f", at most ${self.max_price:g}/h" if self.max_price is not None else ""
        gpus = "1 GPU" if self.num_gpus == 1 else f"{self.num_gpus} GPUs"
        return (
            f"{gpus} with >= {self.gpu_ram.shown} each ({self.gpu_ram.reason}), compute capability >= "
            f"{MIN_COMPUTE_CAP / 100:.1f}, reliability >= {MIN_RELIABILITY}, verified, static IP, a direct port{price}"
        )

    def no_match(self) -> VastError:
        return VastError(f"no offer matches: {self.describe()}; loosen --max-price or --min-gpu-ram, or change --gpus")


@dataclass(frozen=True)
class Offer:
    id: int
    gpu_name: str
    num_gpus: int
    gpu_ram_mib: float
    dph_total: float
    reliability: float
    location: str
    compute_cap: float | None = None

    @classmethod
    def from_api(cls, row: Mapping[str, Any]) -> Offer:
        reliability = row.get("reliability2", row.get("reliability"))
        return cls(
            id=int(row["id"]),
            gpu_name=str(row.get("gpu_name") or "?"),
            num_gpus=int(row.get("num_gpus") or 0),
            gpu_ram_mib=float(row.get("gpu_ram") or 0),
            dph_total=float(row.get("dph_total") or 0),
            reliability=float(reliability or 0),
            location=str(row.get("geolocation") or "?"),
            compute_cap=float(row["compute_cap"]) if row.get("compute_cap") is not None else None,
        )

    @property
    def gpu_ram_gb(self) -> float:
        """Per GPU, as the card is sold (see the module docstring)."""
        return mib_to_marketed_gb(self.gpu_ram_mib)

    def summary(self) -> str:
        return (
            f"offer {self.id}: {self.num_gpus}x {self.gpu_name} ({self.gpu_ram_gb:.0f} GB each), "
            f"${self.dph_total:.3f}/h, {self.location}"
        )


def search_offers(client: VastApi, query: OfferQuery) -> list[Offer]:
    """Matching offers, cheapest first."""
    with vast_call("searching offers"):
        rows = client.search_offers(
            query=query.filters(), order="dph_total", limit=query.limit, storage=query.disk_gb, no_default=True
        )
    return [Offer.from_api(row) for row in rows or []]


def get_offer(client: VastApi, offer_id: int, disk_gb: float = DEFAULT_DISK_GB) -> Offer:
    """One offer by id, if it can still be rented."""
    query = {"id": {"eq": offer_id}, "rentable": {"eq": True}, "rented": {"eq": False}}
    with vast_call(f"looking up offer {offer_id}", offer_id):
        rows = client.search_offers(query=query, order="dph_total", limit=1, storage=disk_gb, no_default=True)
    if not rows:
        raise OfferGone(
            f"offer {offer_id} is not available (already rented, or no such offer): "
            "pick another with `reranker vast search`, or use --cheapest"
        )
    return Offer.from_api(rows[0])
