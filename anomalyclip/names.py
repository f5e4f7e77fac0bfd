"""Names: video ids written into file and store names (one encoding, each format kept as it
is on disk), and class names as they are compared.

Two kinds of name are derived from what a dataset or a user calls a video:

- a store key (:func:`anomalyclip.store.records.video_key`): the whole id percent-encoded,
  ``/`` included, over :data:`STORE_SAFE`;
- an output name (:func:`safe_name`): the id's ``/``-separated parts percent-encoded over
  :data:`OUTPUT_SAFE`, one folder level each (eval's and predict's CSVs, plots, renders).

(A live camera's name, in its clips' file names, MQTT topics and metric labels, is short
and lossy instead: :func:`anomalyclip.inputs.safe_source_name`.)

Both are reversible (:func:`percent_decode`) until a name outgrows its bound: it is
then cut (never inside a ``%XX``) and ended by a mark and a hash (:func:`cut_with_hash`).
Existing stores, runs and outputs are found by these exact names: a change to either
encoding is a change of the on-disk formats.
"""

from __future__ import annotations

import hashlib
from urllib.parse import quote, unquote

# Characters other than ASCII letters, digits and ``_.-~`` (which percent-encoding always
# keeps) kept as they are: in store keys, those a Zarr or HDF5 node name takes as is; in
# output names, those portable on every file system and shell-quoting-free except '#', ','
# and '=', which XD-Violence ids are full of.
STORE_SAFE = "-_.,+=@()[]~ "
OUTPUT_SAFE = "=,()#"
OUTPUT_MAX = 200  # bytes per output path component, well under the usual 255


def percent_encode(text: str, safe: str) -> str:
    """``text`` as UTF-8 (a file name that is not UTF-8, ``\\udce9`` for its byte 0xE9, keeps
    its bytes: ``%E9``), every byte but ASCII letters, digits, ``_.-~`` and ``safe`` written
    ``%XX``."""
    return quote(text.encode("utf-8", "surrogateescape"), safe=safe)


def percent_decode(name: str) -> str:
    """The text :func:`percent_encode` was given (for a name that was not cut)."""
    return unquote(name, errors="surrogateescape")


def normalise_label(label: str) -> str:
    """A class name as compared: case, underscores and outer spaces do not count."""
    return label.replace("_", " ").casefold().strip()


def cut_with_hash(encoded: str, keep: int, mark: str, digest: str) -> str:
    """``encoded`` cut to its first ``keep`` characters (fewer where that would split a
    ``%XX``), then ``mark`` and ``digest``: unique as the digest is, no longer reversible."""
    cut = encoded[:keep]
    cut = cut[: cut.rfind("%")] if "%" in cut[-2:] else cut
    return f"{cut}{mark}{digest}"


def _output_part(part: str) -> str:
    # '~' (which percent-encoding keeps) is written %7E: a raw '~' in an output name is
    # then only ever a mark, of a cut name or of predict's second input of one name (~2)
    out = percent_encode(part, OUTPUT_SAFE).replace("~", "%7E")
    if out.startswith("."):  # no hidden files, no '.' or '..'
        out = "%2E" + out[1:]
    if len(out) > OUTPUT_MAX:
        digest = hashlib.sha256(part.encode("utf-8", "surrogateescape")).hexdigest()[:16]
        out = cut_with_hash(out, OUTPUT_MAX - 20, "~", digest)
    return out or "%00"


def safe_name(video_id: str) -> str:
    """A relative file name (without suffix) for a video id: unique and reversible.

    Each ``/``-separated part of the id becomes a folder level; characters outside a portable
    set are percent-encoded (``a b`` -> ``a%20b``, ``日本`` -> ``%E6%97%A5%E6%9C%AC``, ``~``
    -> ``%7E``: a ``~`` in an output name is a mark, never part of an id), so
    ``unquote(name) == video_id`` and ordinary ids stay readable. A part longer than 200
    bytes once encoded is cut and ends in ``~`` and a hash of the part: still unique, no
    longer reversible from the name alone.
    """
    return "/".join(_output_part(part) for part in video_id.split("/"))
