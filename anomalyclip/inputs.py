"""What the commands take as video input: files, folders, globs, list files and live URLs.

:func:`expand_inputs` turns what a user typed into an ordered list of sources, the same way
for ``features``, ``predict`` and ``watch``:

- **a URL** (``rtsp://``, ``http(s)://``, ``udp://``, ``srt://``, ``rtmp://``, ``tcp://``...)
  or a V4L2 device (``/dev/video0``): a live source, kept as it is. Only ``watch`` takes them
  (``live=True``); elsewhere they are refused with a one-line error.
- **a file named on the command line or in a list** is a video whatever its suffix: camera
  exports come as ``.h264``, ``.264``, ``.h265``, ``.ts``, ``.mts``, ``.m2ts``, ``.3gp``,
  ``.asf``, ``.vob``, ``.dav`` and more, and FFmpeg recognises them by their content. It is
  never skipped or refused for its extension; a file that is not a video fails when it is
  decoded, with the decoder's reason. The one exception is a **list file**: a file ending
  in ``.txt``, ``.lst`` or ``.list``, or a small text file (no NUL byte, valid UTF-8, not an
  ``#EXTM3U`` playlist) with no video suffix. It holds one path, glob or URL per line (blank
  lines and ``#`` comments are ignored); relative paths are relative to the list's folder,
  and each line is expanded like a command-line item.
- **a folder**: a folder with image files and no videos directly inside is a folder of
  frames (one video). Any other folder is searched recursively, in natural name order:
  files with a known video suffix are taken; files whose suffix says they are not video
  (text, data, images, subtitles, archives, documents, code) are skipped; files with any
  other suffix, or none, are probed with PyAV and taken when they hold a video stream.
  Subfolders holding only image frames are taken as frame folders. Links to folders are
  followed, but each folder is searched once: a link that loops (``a -> .``) is skipped, as
  are links to files that do not exist.
- **a glob** (``*``, ``?``, ``[``; ``**`` recurses, searching each folder once as above):
  its matches are filtered the way a folder's files are, since a pattern names files only
  collectively.

Duplicates (the same file reached twice) are kept once, at their first position.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Iterator
from fnmatch import fnmatch
from pathlib import Path

from anomalyclip.errors import AnomalyError

log = logging.getLogger(__name__)

Source = Path | str  # a file or frame folder, or a live URL / device

VIDEO_EXTENSIONS = frozenset(
    {".mp4", ".avi", ".mkv", ".mov", ".webm", ".mpg", ".mpeg", ".m4v", ".wmv", ".flv"}
    # camera and recorder exports, which FFmpeg recognises by their content
    | {".h264", ".264", ".h265", ".265", ".hevc", ".ts", ".mts", ".m2ts", ".m2t", ".3gp"}
    | {".3g2", ".asf", ".vob", ".dav", ".mjpeg", ".mjpg", ".ogv", ".dv", ".mxf", ".f4v"}
    | {".nut", ".y4m", ".ivf", ".rm", ".rmvb", ".divx", ".xvid", ".m1v", ".m2v", ".m4s"}
)
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})

LIST_SUFFIXES = frozenset({".txt", ".lst", ".list"})
# suffixes that say "not a video": skipped when scanning folders and globs (never when named)
_NOT_VIDEO = """
    .json .jsonl .csv .tsv .xml .yaml .yml .toml .ini .cfg .conf .log .md .rst .html .htm .pdf
    .doc .docx .xls .xlsx .ppt .pptx .odt .rtf .tex .srt .vtt .ass .ssa .sub .idx .nfo .sfv
    .md5 .sha1 .sha256 .sig .torrent .zip .tar .gz .tgz .bz2 .xz .zst .7z .rar .lz4 .npy .npz
    .pt .pth .ckpt .safetensors .h5 .hdf5 .zarr .pkl .pickle .parquet .py .pyc .sh .bat .ps1
    .c .h .cpp .js .exe .dll .so .dylib .mp3 .wav .flac .aac .ogg .opus .m4a .wma .db .lock
    .part .tmp .swp
"""
NOT_VIDEO_SUFFIXES = frozenset(IMAGE_EXTENSIONS | LIST_SUFFIXES | set(_NOT_VIDEO.split()))
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_GLOB = re.compile(r"[*?\[]")
_LIST_SNIFF_BYTES = 1 << 16
_MAX_LIST_DEPTH = 8


def is_live(item: str | Path) -> bool:
    """A URL or a V4L2 device: a stream that has no end and cannot be read twice."""
    text = str(item)
    return bool(_URL.match(text)) or re.fullmatch(r"/dev/video\d+", text) is not None


def display_name(source: Source) -> str:
    """How a source is named in outputs: its URL with every credential masked (:func:`redact`)."""
    return redact(str(source))


def redact(text: str) -> str:
    """``text`` with the credentials of every URL in it replaced by ``***``: what may be shown
    or written (status lines, events, webhook bodies, warnings, errors).

    - **userinfo**: everything between ``scheme://`` and the URL's *last* ``@`` is taken for
      credentials (passwords may hold ``@``, ``'`` or ``/``); ``user:password@`` keeps its
      user name when that is a plain name (``admin:***@``), anything else (a token alone in
      the user part) becomes ``***@``;
    - **query and fragment parameters** whose name contains ``pass``, ``pwd``, ``secret``,
      ``token``, ``key``, ``auth``, ``sig``, ``credential`` or ``session`` (any case:
      ``password``, ``access_token``, ``apikey``, ``X-Amz-Signature``, ``X-Amz-Credential``,
      ``X-Goog-Signature``...) keep their name, their value becomes ``***``.

    Wrong on the safe side: an ``@`` in a URL's path or query masks what comes before it.
    """
    return _URL_IN_TEXT.sub(lambda m: _redact_url(m.group(0)), text)


_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://\S*")
_SECRET_NAME = re.compile(r"pass|pwd|secret|token|key|auth|sig|credential|session", re.I)
_PARAM = re.compile(r"([?&;#])([^=&;#?]*)=([^&;#]*)")
_PLAIN_USER = re.compile(r"[A-Za-z0-9._~%+-]*")


def _redact_url(url: str) -> str:
    scheme, _, rest = url.partition("://")
    userinfo, at, rest = rest.rpartition("@")
    shown = ""
    if at:
        user, colon, _ = userinfo.partition(":")
        shown = f"{user}:***@" if colon and _PLAIN_USER.fullmatch(user) else "***@"
    cut = min((i for i in (rest.find("?"), rest.find("#")) if i >= 0), default=len(rest))
    tail = _PARAM.sub(_mask_param, rest[cut:])
    return f"{scheme}://{shown}{rest[:cut]}{tail}"


def _mask_param(m: re.Match) -> str:
    from urllib.parse import unquote

    secret = _SECRET_NAME.search(unquote(m.group(2)))
    return f"{m.group(1)}{m.group(2)}={'***' if secret else m.group(3)}"


def safe_source_name(source: str) -> str:
    """A file-name-safe form of a source: a file's name without its suffix; a URL's host,
    port and path, without credentials or query (``rtsp://admin:pw@10.0.0.5:554/cam1`` ->
    ``10.0.0.5_554_cam1``)."""
    text = str(source)
    if re.match(r"^[a-z][a-z0-9+.-]*://", text, flags=re.I):
        rest = redact(text).split("://", 1)[1].rpartition("@")[2]
        name = re.split(r"[?#]", rest, maxsplit=1)[0]
    else:
        name = Path(text).stem
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")
    return name[-80:] or "source"


def expand_inputs(items: list[str | Path], live: bool = False) -> list[Source]:
    """Every source named by ``items`` (module docstring), in order, without duplicates.

    ``live`` accepts URLs and devices (``watch``); otherwise they are an error. Raises
    :class:`AnomalyError` naming the item for a path that does not exist, a glob or folder
    without videos, or an empty list file.
    """
    out: list[Source] = []
    seen: set[str] = set()
    for item in items:
        for source in _expand(str(item), Path("."), live, depth=0, where=None):
            key = source if isinstance(source, str) else os.path.realpath(source)
            if key in seen:
                log.info("%s: named twice, taken once", redact(str(source)))
                continue
            seen.add(key)
            out.append(source)
    if not out:
        raise AnomalyError("no input videos given")
    return out


def _expand(item: str, base: Path, live: bool, depth: int, where: str | None) -> list[Source]:
    prefix = f"{where}: " if where else ""
    if is_live(item):
        if not live:
            shown = redact(item)
            raise AnomalyError(f"{prefix}{shown}: a live stream; only 'anomaly watch' reads these")
        return [item]
    path = Path(os.path.expanduser(item))
    if not path.is_absolute() and where is not None:  # a list's entries: from the list's folder
        path = base / path
    if path.is_dir():
        return _scan_folder(path)
    if path.is_file():
        if _is_list_file(path, sniff=where is None):  # a list names lists by their suffix
            return _read_list(path, live, depth, quoted=where is None)
        return [path]  # named explicitly: a video whatever its suffix
    if _GLOB.search(item):
        matches = sorted(_glob(str(path)), key=natural_key)
        found = [s for m in matches for s in _collect(Path(m))]
        if not found:
            raise AnomalyError(f"{prefix}{item}: the pattern matches no video")
        return found
    what = "video file, frame folder or URL" if live else "video file or frame folder"
    raise AnomalyError(f"{prefix}{item}: no such {what}")


def natural_key(name: str) -> list:
    """Sort key that orders ``frame2`` before ``frame10`` (file names, folders, globs)."""
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", str(name))]


def _collect(path: Path) -> list[Source]:
    """A file or folder met while scanning: taken only if it looks like video."""
    if path.is_dir():
        return _scan_folder(path, required=False)
    if path.is_file() and _looks_like_video(path):
        return [path]
    return []


def _is_frame_folder(folder: Path) -> bool:
    files = [f for f in folder.iterdir() if f.is_file()]
    has_images = any(f.suffix.lower() in IMAGE_EXTENSIONS for f in files)
    return has_images and not any(f.suffix.lower() in VIDEO_EXTENSIONS for f in files)


def _scan_folder(folder: Path, required: bool = True) -> list[Source]:
    if _is_frame_folder(folder):
        return [folder]
    found: list[Source] = []
    for dirpath, dirnames, filenames in _walk(str(folder)):
        here = Path(dirpath)
        if here != folder and _is_frame_folder(here):
            found.append(here)
            dirnames.clear()
            continue
        for name in filenames:
            file = here / name
            if file.is_file() and _looks_like_video(file):  # no broken or looping link
                found.append(file)
    if required and not found:
        raise AnomalyError(f"{folder}: no videos found in this folder")
    return found


def _walk(top: str) -> Iterator[tuple[str, list[str], list[str]]]:
    """``os.walk(top, followlinks=True)`` in natural name order, without hidden entries, that
    visits each folder once: a folder reached again (a symlink loop such as ``a -> .``, or a
    second link to it) is skipped, so a walk always ends. Clearing the yielded folder names
    prunes them, as with :func:`os.walk`."""
    seen: set[tuple[int, int]] = set()
    stack = [top]
    while stack:
        folder = stack.pop()
        try:
            st = os.stat(folder or ".")
            entries = sorted(os.scandir(folder or "."), key=lambda e: natural_key(e.name))
        except OSError as exc:
            log.info("%s: skipped (%s)", folder, exc.strerror or exc)
            continue
        if (st.st_dev, st.st_ino) in seen:
            log.info("%s: a folder already searched (a symlink loop?): skipped", folder)
            continue
        seen.add((st.st_dev, st.st_ino))
        dirnames, filenames = [], []
        for entry in entries:
            if not entry.name.startswith("."):
                (dirnames if _entry_is_dir(entry) else filenames).append(entry.name)
        yield folder, dirnames, filenames
        stack.extend(os.path.join(folder, d) for d in reversed(dirnames))


def _entry_is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()  # follows links; a looping or broken link is no folder
    except OSError:
        return False


def _glob(pattern: str) -> list[str]:
    """The paths ``pattern`` matches (``*``, ``?``, ``[...]`` within a name; ``**``: any
    number of folders), as :func:`glob.glob` with ``recursive=True`` gives them, except that
    ``**`` searches each folder once (:func:`_walk`): links that loop cannot make it endless.
    Hidden names match only a pattern that starts with a dot."""
    parts = pattern.split(os.sep)
    head = next((i for i, part in enumerate(parts) if _GLOB.search(part)), len(parts))
    root = os.sep.join(parts[:head]) or (os.sep if pattern.startswith(os.sep) else "")
    paths = [root]
    for i, part in enumerate(parts[head:], start=head):
        last = i == len(parts) - 1
        found: list[str] = []
        for base in paths:
            if part == "**":
                for folder, _, filenames in _walk(base):
                    found.append(folder)
                    found += [os.path.join(folder, f) for f in filenames] if last else []
            elif _GLOB.search(part):
                names = _names(base, hidden=part.startswith("."))
                found += [os.path.join(base, n) for n in names if fnmatch(n, part)]
            elif part:
                found.append(os.path.join(base, part))
            else:  # a trailing separator: folders only
                found += [base] if os.path.isdir(base) else []
        paths = found
    return list(dict.fromkeys(p for p in paths if p and os.path.lexists(p)))


def _names(folder: str, hidden: bool) -> list[str]:
    try:
        return [n for n in os.listdir(folder or ".") if hidden or not n.startswith(".")]
    except OSError:
        return []


def _looks_like_video(path: Path) -> bool:
    """Known video suffix: yes; known non-video suffix: no; anything else: ask PyAV."""
    suffix = path.suffix.lower()
    if suffix in VIDEO_EXTENSIONS:
        return True
    if suffix in NOT_VIDEO_SUFFIXES:
        return False
    return probe_video(path)


def probe_video(path: Path) -> bool:
    """Does FFmpeg recognise the content of ``path`` as holding a video stream?"""
    import av

    try:
        if path.stat().st_size == 0:
            return False
        with av.open(str(path), options={"probesize": "1000000"}) as container:
            return bool(container.streams.video)
    except (av.error.FFmpegError, OSError, ValueError, UnicodeDecodeError):
        return False


def _is_list_file(path: Path, sniff: bool = True) -> bool:
    suffix = path.suffix.lower()
    if suffix in LIST_SUFFIXES:
        return True
    if suffix in VIDEO_EXTENSIONS or not sniff:
        return False
    try:
        with path.open("rb") as fh:
            head = fh.read(_LIST_SNIFF_BYTES + 1)
    except OSError:
        return False
    if not head or len(head) > _LIST_SNIFF_BYTES or b"\0" in head:
        return False  # empty, large or binary: a video (or a failure the decoder explains)
    if head.lstrip().startswith(b"#EXTM3U"):
        return False  # an HLS playlist: FFmpeg reads it as a stream
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _read_list(path: Path, live: bool, depth: int, quoted: bool = True) -> list[Source]:
    """The sources of a list file. An error quotes a line only of a list named on the command
    line with a list suffix: any other file read as a list (one a shared list names, or a
    small text file) may hold what must not be shown, so only its line number is."""
    quoted = quoted and path.suffix.lower() in LIST_SUFFIXES
    if depth >= _MAX_LIST_DEPTH:
        raise AnomalyError(f"{path}: list files nested more than {_MAX_LIST_DEPTH} deep")
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise AnomalyError(f"{path}: cannot read the list ({exc})") from exc
    found: list[Source] = []
    for lineno, line in enumerate(lines, start=1):
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        try:
            found += _expand(entry, path.parent, live, depth + 1, f"{path}:{lineno}")
        except AnomalyError as exc:
            if quoted:
                raise
            raise AnomalyError(
                f"{path}:{lineno}: names no video file, frame folder, glob or URL (read as a "
                "list of videos; its lines are not shown)"
            ) from exc
    if not found:
        raise AnomalyError(f"{path}: the list names no video")
    return found


def fingerprint_file(path: str | Path, sample: int = 1 << 20) -> tuple[int, str]:
    """Size and a cheap content fingerprint of a source video (or a folder of frames).

    Hashing whole videos would cost as much I/O as decoding them on resume, so the
    fingerprint covers the size and three 1 MiB samples (start, middle, end): any re-encode,
    truncation or replacement changes it.
    """
    p = Path(path)
    h = hashlib.sha256()
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.is_file())
        size = 0
        for f in files:
            st = f.stat()
            size += st.st_size
            h.update(f"{f.name}:{st.st_size};".encode())
        return size, "dir-sha256:" + h.hexdigest()
    size = p.stat().st_size
    h.update(str(size).encode())
    with p.open("rb") as fh:
        for offset in sorted({0, max(0, size // 2 - sample // 2), max(0, size - sample)}):
            fh.seek(offset)
            h.update(fh.read(sample))
    return size, "sample-sha256:" + h.hexdigest()
