"""Exports of a run for CPU boxes: ONNX and OpenVINO graphs of the image tower and the scorer.

- :mod:`~anomalyclip.export.graphs`: the two graphs as torch modules (what is exported);
- :mod:`~anomalyclip.export.onnx`, :mod:`~anomalyclip.export.openvino`: writing them in
  each format and running them;
- :mod:`~anomalyclip.export.quantize`: int8 image towers, calibrated on real frames;
- :mod:`~anomalyclip.export.manifest`: the export folder and its ``manifest.json``
  (standard library only: the command line checks folders before importing torch);
- :mod:`~anomalyclip.export.exporter`: :func:`export_run`, what ``anomaly export`` calls;
- :mod:`~anomalyclip.export.backends`: an export folder run in place of the torch image
  tower and model by ``features``, ``predict`` and ``watch`` (``--backend``).

Importing this package imports nothing heavy; ONNX, ONNX Runtime, OpenVINO and NNCF come
from the optional extra ``anomalyclip[export]`` and are imported where used.
"""
