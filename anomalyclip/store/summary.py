"""What ``anomaly store info`` prints: counts per split and class, frames, size."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from anomalyclip.store.store import FeatureStore


def summarize(store: FeatureStore) -> dict:
    """Counts for ``anomaly store info``: per split and class, frames, size."""
    meta = store.meta
    listing = store.listing()
    recs = [r for _, r, _ in listing if r is not None]
    done = [r for r in recs if r.complete]
    per_split = Counter(r.split for r in done)
    per_class = Counter(f"{r.split}/{r.label}" for r in done)
    return {
        "location": store.location,
        "dataset": meta.dataset,
        "backbone": meta.model,
        "dim": meta.dim,
        "dtype": meta.dtype,
        "sampling": meta.sampling,
        "videos": len(done),
        "incomplete": len(recs) - len(done),
        "damaged": len(listing) - len(recs),
        "truncated": sum(1 for r in done if r.truncated),
        "failed": len(store.backend.names("failures")),
        "frames": int(sum(r.num_frames for r in done)),
        "per_split": dict(sorted(per_split.items())),
        "per_class": dict(sorted(per_class.items())),
        "size_bytes": store.size_bytes(),
    }
