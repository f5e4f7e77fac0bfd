"""``--metrics [HOST:]PORT``: the watch's health as Prometheus metrics, at ``/metrics``.

Per camera (label ``camera``, the camera's name):

- ``anomalyclip_frames_total{camera,stage}``: frames ``decoded``, ``sampled`` (in: kept by
  the run's sampling), ``scored``, ``dropped`` (the queue was full); ``stage="corrupt"``
  counts the packets the demuxer flagged or the decoder refused; the same numbers as the
  watch's status and summary lines;
- ``anomalyclip_lag_seconds{camera}``: histogram of the time from a frame being due to its
  score (from the watch's own fixed-size histogram, so a bucket is exact to within 2.5 %);
- ``anomalyclip_source_up{camera}``: 1 while frames flow, 0 while reconnecting or ended;
- ``anomalyclip_reconnects_total{camera}``, ``anomalyclip_gaps_total{camera}``;
- ``anomalyclip_events_total{camera,class}``: closed events by their class;
- ``anomalyclip_threshold{camera}``: the p(A) that opens an event.

For the whole watch: ``anomalyclip_model_batch_seconds{part}`` (histogram of one CLIP forward,
``part="clip"``, and one temporal-model forward over the hop's windows, ``"temporal"``) and
``anomalyclip_output_total{output,outcome}`` (each output's summary counts: lines written,
messages sent, dropped...).

The endpoint listens on the loopback unless a host is given: ``9108`` is
``127.0.0.1:9108``; ``0.0.0.0:9108`` (every interface, to be reached from a Prometheus on
another machine) is taken only when written out, and said in the log. The metrics live in a
registry of their own (never the process-wide default), read from the watch when scraped.
"""

from __future__ import annotations

import importlib.util
import logging
import threading

import numpy as np

from anomalyclip.errors import AnomalyError
from anomalyclip.live.sinks import Sink
from anomalyclip.live.stats import LagHistogram, public_state

log = logging.getLogger(__name__)

LAG_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0)
BATCH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
STAGES = ("decoded", "sampled", "scored", "dropped", "corrupt")


def listen_address(text: str) -> tuple[str, int]:
    """(host, port) of ``[HOST:]PORT`` (loopback without a host); a one-line error else."""
    if importlib.util.find_spec("prometheus_client") is None:
        raise AnomalyError("--metrics: the prometheus_client package is not installed "
                           "(pip install 'anomalyclip[service]')")  # fmt: skip
    host, _, port = str(text).rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise AnomalyError(f"--metrics {text}: expected [HOST:]PORT, a port in 0-65535")
    return host, int(port)


class Metrics(Sink):
    """The Prometheus endpoint of a watch (module docstring); ``watcher`` is read when
    scraped: its streams' counters, its batch timings and its other sinks' counts."""

    name = "metrics"

    def __init__(self, listen: str, watcher) -> None:
        from prometheus_client import CollectorRegistry, Counter

        self.host, self.port = listen_address(listen)
        self.watcher = watcher
        self.registry = CollectorRegistry(auto_describe=False)  # collected when scraped
        self.events = Counter("anomalyclip_events", "Closed events by camera and class",
                              ["camera", "class"], registry=self.registry)  # fmt: skip
        self.registry.register(_WatchCollector(watcher))
        self._server = None

    def start(self) -> None:
        from prometheus_client import start_http_server

        if self.host in ("0.0.0.0", "::"):
            log.warning("metrics: listening on every interface (%s), as asked", self.host)
        try:
            self._server, _ = start_http_server(self.port, self.host, registry=self.registry)
        except OSError as exc:
            log.error("metrics: cannot listen on %s:%d (%s); the watch goes on without them",
                      self.host, self.port, exc.strerror or exc)  # fmt: skip
            return
        self.port = self._server.server_port
        log.info("metrics on http://%s:%d/metrics", self.host, self.port)

    def write(self, record: dict, line: str) -> None:
        if record.get("kind") == "closed" and "camera" in record:
            self.events.labels(record["camera"], str(record.get("class"))).inc()

    def close(self, hurry: threading.Event | None = None) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


class _WatchCollector:
    """What the watch counts, read at each scrape."""

    def __init__(self, watcher) -> None:
        self.watcher = watcher

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        w = self.watcher
        frames = CounterMetricFamily("anomalyclip_frames", "Frames per camera and stage",
                                     labels=["camera", "stage"])  # fmt: skip
        up = GaugeMetricFamily("anomalyclip_source_up", "1 while frames flow", labels=["camera"])
        reconnects = CounterMetricFamily("anomalyclip_reconnects", "Attempts to reopen a source",
                                         labels=["camera"])  # fmt: skip
        gaps = CounterMetricFamily("anomalyclip_gaps", "Breaks a source came back from",
                                   labels=["camera"])  # fmt: skip
        threshold = GaugeMetricFamily("anomalyclip_threshold", "p(A) that opens an event",
                                      labels=["camera"])  # fmt: skip
        lag = _histogram("anomalyclip_lag_seconds", "Seconds from a frame being due to its score",
                         ["camera"])  # fmt: skip
        for s in w.streams:
            st, name = s.stats, [s.camera.name]
            for stage in STAGES:
                frames.add_metric([*name, stage], getattr(st, stage))
            up.add_metric(name, 1.0 if public_state(st.state) == "online" else 0.0)
            reconnects.add_metric(name, st.reconnects)
            gaps.add_metric(name, st.gaps)
            threshold.add_metric(name, s.events.threshold)
            _observe(lag, name, st.lag, LAG_BUCKETS)
        batch = _histogram("anomalyclip_model_batch_seconds", "Seconds of one model forward",
                           ["part"])  # fmt: skip
        for part, timing in w.timings.items():
            _observe(batch, [part], timing, BATCH_BUCKETS)
        outputs = CounterMetricFamily("anomalyclip_output", "Each output's counts",
                                      labels=["output", "outcome"])  # fmt: skip
        for sink in w.sinks:
            for outcome, n in sink.report().items():
                outputs.add_metric([sink.name, outcome], n)
        for outcome, n in w.clip_counts.items():
            if w.clips is not None:
                outputs.add_metric(["clips", outcome], n)
        yield from (frames, up, reconnects, gaps, threshold, lag, batch, outputs)


def _histogram(name: str, documentation: str, labels: list[str]):
    from prometheus_client.core import HistogramMetricFamily

    return HistogramMetricFamily(name, documentation, labels=labels)


def _observe(family, labels: list[str], hist: LagHistogram, bounds: tuple[float, ...]) -> None:
    """A :class:`LagHistogram` as Prometheus buckets (a copy of its counts, consistent)."""
    counts = hist.counts.copy()
    total = int(counts.sum())
    upto = np.searchsorted(hist.edges, np.asarray(bounds), side="right")
    below = np.cumsum(counts)[np.maximum(upto - 1, 0)] * (upto > 0)
    buckets = [(f"{b:g}", float(n)) for b, n in zip(bounds, below, strict=True)]
    family.add_metric(labels, buckets + [("+Inf", float(total))], hist.sum)
