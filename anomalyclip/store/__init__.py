"""The feature store: Zarr v3 or HDF5 shards of CLIP frame embeddings with provenance."""

from anomalyclip.store.copy import MergeReport, export_store, merge_stores
from anomalyclip.store.meta import (
    DEFAULT_DIM,
    SCHEMA,
    SCHEMA_VERSION,
    StoreMeta,
    first_difference,
    provenance,
)
from anomalyclip.store.records import VideoRecord, content_sha256, video_key
from anomalyclip.store.store import FeatureStore, open_store

__all__ = [
    "DEFAULT_DIM",
    "SCHEMA",
    "SCHEMA_VERSION",
    "FeatureStore",
    "MergeReport",
    "StoreMeta",
    "VideoRecord",
    "content_sha256",
    "export_store",
    "first_difference",
    "merge_stores",
    "open_store",
    "provenance",
    "video_key",
]
