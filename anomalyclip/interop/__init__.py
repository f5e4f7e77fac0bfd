"""Interoperability with files written by other code: the AnomalyCLIP authors' checkpoints."""

from anomalyclip.interop.safe_pickle import LoadedArchive, Placeholder, load_torch_file

__all__ = ["LoadedArchive", "Placeholder", "load_torch_file"]
