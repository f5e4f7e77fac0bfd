"""The feature store: Zarr v3 or HDF5 shards of CLIP frame embeddings with provenance."""

from anomalyclip.store.copy import MergeReport, export_store, merge_stores
from anomalyclip.store.meta import DEFAULT_DIM, StoreMeta, provenance
from anomalyclip.store.store import (
    SCHEMA,
    SCHEMA_VERSION,
    FeatureStore,
    VideoRecord,
    content_sha256,
    fingerprint_file,
    first_difference,
    open_store,
    video_key,
)

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
    "fingerprint_file",
    "first_difference",
    "merge_stores",
    "open_store",
    "provenance",
    "video_key",
]
