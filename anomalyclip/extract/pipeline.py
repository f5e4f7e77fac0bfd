"""Videos -> feature store: decoder threads overlapped with batched CLIP inference.

A run is four pieces, each its own module and testable alone::

    sources ─► Decoders ──────► Batcher ─────────► ImageEncoder ─► Writer ─► store
              (threads: decode, (frames of one       (batches of      (a video is written
               resize, crop)     video, fixed size)   batch_size      once all its rows
                                                      at most)         arrived)

:class:`~anomalyclip.extract.decoder_threads.Decoders` decode whole sources in threads and hand
uint8 224x224 crops over a bounded queue, so decoding runs ahead of the model by a few
chunks; :class:`~anomalyclip.extract.batching.Batcher` packs each video's crops into batches
of its own (so its features never depend on the videos decoded beside it) and splits the
embeddings back per video;
:class:`~anomalyclip.extract.writer.Writer` assembles each video and is the only code that
touches the store. :func:`extract` wires them together; every choice is an
:class:`~anomalyclip.extract.config.ExtractConfig`.

Resume and idempotence come from the store: a video whose copy is complete and whose source
fingerprint matches is skipped before decoding; anything else is (re)done, and the store's
complete-flag-last write means a killed run never leaves a video that reads as done.
A video that fails (cannot be opened, truncated, stalls its decoder, ...) is recorded in the
store with its reason and the run goes on.

Scale-out: ``shard=(rank, world)`` gives each of ``world`` processes a disjoint share of the
videos balanced by bytes (:func:`shard_entries`), all writing into one store. Under one launch
(``coordinated``, e.g. ``torchrun``) rank 0 writes the root attributes and the other ranks wait
for them, so a store's provenance is written once and never raced.
"""

from __future__ import annotations

import heapq
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from anomalyclip import backbone, locations
from anomalyclip.checks import is_url
from anomalyclip.datasets.registry import VideoEntry, get_dataset
from anomalyclip.errors import AnomalyError
from anomalyclip.extract.batching import Batch, Batcher
from anomalyclip.extract.config import ROOT_WAIT_S, STALL_S, ExtractConfig
from anomalyclip.extract.decoder_threads import Chunk, Decoders, Done
from anomalyclip.extract.encoder import ImageEncoder
from anomalyclip.extract.preprocess import preprocessing_attrs
from anomalyclip.extract.writer import Job, Summary, Writer, relative
from anomalyclip.inputs import fingerprint_file
from anomalyclip.progress import bar as progress_bar
from anomalyclip.store import SCHEMA, FeatureStore, open_store, provenance
from anomalyclip.store.backend import store_format

__all__ = [
    "ROOT_WAIT_S",
    "STALL_S",
    "ExtractConfig",
    "Summary",
    "extract",
    "preprocessing_attrs",
    "shard_entries",
]

log = logging.getLogger(__name__)


def clip_record(described: dict, store_path: str | Path) -> dict:
    """Where the CLIP was, relative to the store and absolute, with its weight hash: a store
    moved together with its CLIP, or alone, still names it (:func:`locations.store_clip`)."""
    entry = locations.record(described["model"], None if is_url(str(store_path)) else store_path)
    if "absolute" in entry and described.get("weights_sha256"):
        entry["weights_sha256"] = described["weights_sha256"]
    return entry


def extract(
    entries: Sequence[VideoEntry],
    store_path: str | Path,
    model: str | Path | ImageEncoder = backbone.DEFAULT_CLIP,
    config: ExtractConfig | None = None,
    **fields,
) -> Summary:
    """Extract CLIP frame embeddings of ``entries`` into the store at ``store_path``.

    ``model`` is a hub id, a local Hugging Face directory, or a loaded :class:`ImageEncoder`
    or an encoder with its interface (an exported image tower run by another ``backend``);
    a loaded encoder's own device, precision and backend then apply.
    ``config`` holds every choice of the run; ``fields`` set or override single fields of it
    (``extract(entries, store, clip, dataset="demo", batch_size=16)``). A source that decodes
    to far less than its header declares is stored and flagged as truncated
    (``Summary.truncated``), or with ``strict`` recorded as failed; a video whose decoder
    yields no frame for ``stall_timeout`` seconds is recorded as failed and the run goes on;
    Ctrl-C stops the run at once (what is complete stays, nothing half-done reads as
    complete, failures seen so far are recorded). Returns a :class:`Summary`; failures are
    also recorded in the store.
    """
    cfg = ExtractConfig(**fields) if config is None else replace(config, **fields)
    rank, world = cfg.shard
    entries = shard_entries(entries, rank, world)
    if cfg.coordinated and world > 1 and store_format(store_path) != "zarr":
        raise AnomalyError(
            f"{store_path}: {world} processes cannot write one {store_format(store_path)} "
            "store at once; extract into a Zarr directory or URL (export it afterwards)"
        )
    encoder = (
        ImageEncoder(model, cfg.device, cfg.precision, cfg.attention)
        if isinstance(model, (str, Path))
        else model
    )
    attrs = _root_attrs(encoder, cfg, store_path)
    summary = Summary(total=len(entries))
    t0 = time.perf_counter()
    if cfg.coordinated and rank > 0:
        _wait_for_root(store_path, cfg.root_timeout)
    with open_store(store_path, mode="a") as st:
        existed = st.attrs.get("schema") == SCHEMA
        st.init(attrs)  # writes them, or checks the existing ones agree
        # which rank wrote the attributes matters under torchrun; alone it is noise
        log.log(
            logging.INFO if world > 1 else logging.DEBUG,
            "rank %d/%d: %s root attributes of %s",
            rank, world, "checked" if existed else "wrote", store_path,
        )  # fmt: skip
        jobs = _jobs(entries, st, cfg, summary)
        log.debug(
            "%d videos: %d to extract, %d already in %s",
            len(entries), len(jobs), summary.skipped, store_path,
        )  # fmt: skip
        if jobs:
            _run(jobs, Writer(st, jobs, cfg, summary, encoder.dim), encoder, cfg)
    summary.seconds = time.perf_counter() - t0
    return summary


def _root_attrs(encoder: ImageEncoder, cfg: ExtractConfig, store_path: str | Path) -> dict:
    """The store's root attributes for features of ``encoder`` made as ``cfg`` says."""
    rank, world = cfg.shard
    described = encoder.describe()
    attrs = provenance(
        dataset=cfg.dataset,
        classes=get_dataset(cfg.dataset).classes,
        backbone=described,
        preprocessing=preprocessing_attrs(cfg.preprocess)
        | ({"zone": cfg.zone.describe()} if cfg.zone is not None else {}),
        sampling=cfg.sampling.describe(),
        dtype=cfg.dtype,
        device=str(encoder.device),
        inputs={"clip": clip_record(described, store_path)},
    )
    attrs["producer"]["shard"] = f"{rank}/{world}"  # who wrote the root attributes
    attrs["producer"]["precision"] = encoder.precision  # what the image tower computed in
    attrs["producer"]["attention"] = encoder.attention
    attrs["producer"]["backend"] = encoder.backend  # what ran the image tower
    return attrs


def _jobs(
    entries: Sequence[VideoEntry], st: FeatureStore, cfg: ExtractConfig, summary: Summary
) -> list[Job]:
    """The videos to (re)do: those the store does not hold complete from the same bytes. An
    unreadable file is recorded as failed; a complete one counts as skipped."""
    jobs: list[Job] = []
    for entry in entries:
        try:
            size, fp = fingerprint_file(entry.path)
        except OSError as exc:
            reason = f"{entry.path}: cannot read ({exc.strerror or exc})"
            st.record_failure(entry.video_id, relative(entry.path, cfg.root), reason)
            summary.failed[entry.video_id] = reason
            continue
        if st.is_complete(entry.video_id, fingerprint=fp):
            summary.skipped += 1
        else:
            jobs.append(Job(entry, size, fp))
    return jobs


def _run(jobs: list[Job], writer: Writer, encoder: ImageEncoder, cfg: ExtractConfig) -> None:
    """Decoders -> Batcher -> encoder -> Writer over the videos to do. The bar counts videos
    finished (stored or failed) of the total, with the frames embedded and their rate."""
    batcher = Batcher(cfg.batch_size)
    bar = progress_bar(total=len(jobs), unit="video", desc="extract", enabled=cfg.progress)
    frames, failed_before = 0, len(writer.summary.failed)

    def finished() -> int:  # videos of this run stored or failed so far
        return writer.published + len(writer.summary.failed) - failed_before

    def encode(batch: Batch) -> None:
        nonlocal frames
        rows = encoder(batch.pixels).numpy()  # (n, D)
        for video, part in batch.split(rows):
            writer.rows(video, part)
        frames += len(rows)
        rate = frames / max(bar.format_dict["elapsed"], 1e-9)
        bar.set_postfix_str(f"{frames:,} frames, {rate:.1f} frames/s", refresh=False)
        bar.update(finished() - bar.n)

    pin = encoder.device.type == "cuda"
    try:
        with Decoders([job.entry.path for job in jobs], cfg, pin) as decoded:
            for item in decoded:
                if isinstance(item, Chunk):
                    writer.chunk(item)
                    for batch in batcher.add(item.video, item.pixels):
                        encode(batch)
                elif isinstance(item, Done):
                    last = batcher.flush(item.video)
                    if last is not None:
                        encode(last)
                    writer.done(item)
                else:  # Failed
                    batcher.drop(item.video)
                    writer.fail(item.video, item.reason)
                bar.update(finished() - bar.n)
            for last in batcher.flush_all():  # videos whose decoder sent no Done
                encode(last)
    finally:
        bar.close()


def _source_size(path: Path) -> int:
    """Bytes of a video file, or of all files of a folder of frames (0 when unreadable)."""
    p = Path(path)
    try:
        if p.is_dir():
            return sum(f.stat().st_size for f in p.iterdir() if f.is_file())
        return p.stat().st_size
    except OSError:  # the owning rank records the failure when it fingerprints it
        return 0


def shard_entries(entries: Sequence[VideoEntry], rank: int, world: int) -> list[VideoEntry]:
    """This rank's share of ``entries``: disjoint across ranks, complete, balanced by bytes.

    Greedy longest-processing-time: sources from largest to smallest (ties by video id) each
    go to the rank with the fewest bytes so far (ties to the lower rank). Every rank computes
    the same assignment from the same file sizes, with no communication, and the loads end
    within one source of each other (max - min <= the largest source). Bytes stand in for
    decoding + embedding time, which a round-robin over ids ignores: one long video per rank
    would otherwise decide when the whole job ends. Returned in video-id order.
    """
    if world < 1 or not 0 <= rank < world:
        raise AnomalyError(f"shard {rank}/{world}: need 0 <= rank < world size")
    sized = sorted(
        ((_source_size(e.path), e) for e in entries), key=lambda s: (-s[0], s[1].video_id)
    )
    loads = [(0, r) for r in range(world)]  # heap of (bytes so far, rank)
    mine: list[VideoEntry] = []
    for size, entry in sized:
        load, owner = heapq.heappop(loads)
        heapq.heappush(loads, (load + size, owner))
        if owner == rank:
            mine.append(entry)
    return sorted(mine, key=lambda e: e.video_id)


def _wait_for_root(store_path: str | Path, timeout: float, poll: float = 0.2) -> None:
    """Block until rank 0 has written the store's root attributes (ranks > 0 of one launch).

    Opening read-only never creates anything, so waiting ranks cannot race rank 0 into an
    empty root; any error while the store is being created (absent, no attributes yet, a
    metadata file caught half-written) means "not yet" and is retried.
    """
    deadline = time.monotonic() + timeout
    last = "no store yet"
    while True:
        try:
            with open_store(store_path, mode="r") as st:
                if st.attrs.get("schema") == SCHEMA:
                    return
        except Exception as exc:  # noqa: BLE001 - every failure here means "not written yet"
            last = f"{type(exc).__name__}: {exc}"
        if time.monotonic() >= deadline:
            raise AnomalyError(
                f"{store_path}: rank 0 did not write the store's root attributes within "
                f"{timeout:.0f} s (last: {last})"
            )
        time.sleep(poll)


def shard_from_env() -> tuple[int, int]:
    """(rank, world size) under ``torchrun`` (or any launcher setting RANK/WORLD_SIZE)."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
