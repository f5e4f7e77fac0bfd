"""CLIP's image preprocessing: the native path, batched in torch, and the authors' path.

The definition (what OpenAI's CLIP does through torchvision on PIL images): resize the
shorter side to 224 with antialiased bicubic filtering (the longer side
becomes ``int(224 * long / short)``), centre-crop 224x224 (offsets ``round((side - 224) / 2)``),
scale to [0, 1], normalise with :data:`~anomalyclip.backbone.CLIP_MEAN` / ``CLIP_STD``.

It is split in two so the heavy part runs in the decoder workers and only a small uint8 tensor
crosses the queue (and the host-to-device link): :func:`resize_crop` does the geometry on uint8
(torch's antialiased uint8 bicubic kernel follows PIL's separable filter and rounds to uint8 as
PIL does), :func:`normalize` does the arithmetic on the model's device.

Tolerance against the PIL reference, measured on frames of the four real test videos
(768x576, 320x240, 720x528): the uint8 crops differ from PIL's by at most 2 grey levels
(measured maximum 2, mean absolute difference 0.001-0.004 levels), i.e. at most
2/255/min(std) = 0.030 after normalisation. ``tests/unit/extract/test_extract.py`` asserts both
bounds.

The authors' path (``--preprocess authors``, :func:`authors_crop`) repeats how the published
AnomalyCLIP features were made, step for step with the same libraries: their videos became
JPEG files through OpenCV (``cv2.imwrite``: quality 95, 4:2:0 chroma), each read back with
PIL and ``.convert("RGB")``, resized on the PIL image (bicubic, antialiased: PIL's own
filter) and centre-cropped as above. Here the JPEG stays in memory (``cv2.imencode`` writes
the very bytes ``cv2.imwrite`` does) and the frame comes from PyAV: OpenCV's FFmpeg backend
converts to BGR with one same-size swscale pass, which gives the frames PyAV's ``bgr24``
conversion gives, bit for bit (measured on the four real test videos and on H.264 files
tagged BT.601, BT.709 and full range; both follow the frame's colour tags). A folder of
frames is read as the authors read theirs: PIL, no second JPEG. On vtest.avi frames through
a random ViT-B/16 tower, native features differ from the authors' path by 7 % of their
spread (``anomaly store compare``'s content distance), almost all of it the JPEG step;
``tests/unit/extract/test_authors_preprocess.py`` checks this path against OpenCV and PIL
called directly.
"""

from __future__ import annotations

import functools
import io
import threading

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from anomalyclip import backbone, checks
from anomalyclip.backbone import CLIP_IMAGE_SIZE, CLIP_MEAN, CLIP_STD
from anomalyclip.errors import AnomalyError

MAX_LEVEL_DIFF = 2  # grey levels, uint8 crops against PIL (see module docstring)
PREPROCESS_MODES = checks.PREPROCESS_MODES  # native | authors
JPEG_QUALITY = 95  # OpenCV's default, what cv2.imwrite gave the authors' frames


def resized_shape(height: int, width: int, size: int = CLIP_IMAGE_SIZE) -> tuple[int, int]:
    """(height, width) after resizing the shorter side to ``size`` (torchvision's rounding)."""
    if height <= width:
        return size, int(size * width / height)
    return int(size * height / width), size


def crop_offsets(height: int, width: int, size: int = CLIP_IMAGE_SIZE) -> tuple[int, int]:
    """(top, left) of the centred ``size`` x ``size`` crop (torchvision's rounding)."""
    return int(round((height - size) / 2.0)), int(round((width - size) / 2.0))


def resize_crop(images: np.ndarray | torch.Tensor, size: int = CLIP_IMAGE_SIZE) -> torch.Tensor:
    """(N, H, W, 3) uint8 RGB frames of one size -> (N, 3, size, size) uint8 CLIP crops."""
    x = torch.as_tensor(images)
    if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"expected (N, H, W, 3) uint8 frames, got {tuple(x.shape)} {x.dtype}")
    h, w = x.shape[1:3]
    rh, rw = resized_shape(h, w, size)
    x = x.permute(0, 3, 1, 2)  # (N, 3, H, W), a channels-last view: the fast uint8 layout
    if (rh, rw) != (h, w):
        x = F.interpolate(x, size=(rh, rw), mode="bicubic", antialias=True, align_corners=False)
    top, left = crop_offsets(rh, rw, size)
    return x[:, :, top : top + size, left : left + size].contiguous()  # (N, 3, size, size)


def normalize(pixels: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(N, 3, S, S) uint8 -> (N, 3, S, S) ``dtype``: scaled to [0, 1], then CLIP mean/std."""
    mean = torch.tensor(CLIP_MEAN, dtype=torch.float64)
    std = torch.tensor(CLIP_STD, dtype=torch.float64)
    # (x / 255 - mean) / std as one fused multiply-add: x * scale + shift
    scale = (1.0 / (255.0 * std)).float().view(1, 3, 1, 1).to(pixels.device)
    shift = (-mean / std).float().view(1, 3, 1, 1).to(pixels.device)
    # in place in one float32 copy: a second 38 MB array per batch of 64 took the time of
    # the arithmetic three times over (21 vs 6 ms a batch on the 2-core benchmark host)
    x = torch.empty(pixels.shape, dtype=torch.float32, device=pixels.device).copy_(pixels)
    return torch.addcmul(shift, x, scale, out=x).to(dtype)


def preprocess(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """The whole definition in one call: (N, H, W, 3) uint8 -> (N, 3, 224, 224) float32."""
    return normalize(resize_crop(images))


_OPENCV_LOCK = threading.Lock()


@functools.cache
def _load_opencv():  # noqa: ANN202 - the cv2 module
    checks.preprocess("authors")
    import cv2

    return cv2


def opencv():  # noqa: ANN201 - the cv2 module
    """The ``cv2`` module, or a one-line error naming the extra that installs it.

    Loaded once, by one thread at a time: OpenCV's loader puts its native module (without
    ``__spec__``) in ``sys.modules`` while it runs, and the installed-check of a decoder
    thread arriving meanwhile failed ("cv2.__spec__ is None")."""
    with _OPENCV_LOCK:
        return _load_opencv()


def pil_resize_crop(image: Image.Image, size: int = CLIP_IMAGE_SIZE) -> np.ndarray:
    """A PIL RGB image -> (size, size, 3) uint8: shorter side to ``size`` with PIL's bicubic
    filter (torchvision's ``Resize(size, BICUBIC)`` on a PIL image), then the centre crop."""
    w, h = image.size
    rh, rw = resized_shape(h, w, size)
    if (rh, rw) != (h, w):
        image = image.resize((rw, rh), Image.Resampling.BICUBIC)
    top, left = crop_offsets(rh, rw, size)
    return np.asarray(image)[top : top + size, left : left + size]  # (size, size, 3)


def authors_crop(image: np.ndarray, bgr: bool = True) -> torch.Tensor:
    """One frame the authors' way -> (1, 3, 224, 224) uint8 (module docstring).

    ``bgr``: ``image`` is a decoded video frame, (H, W, 3) BGR as OpenCV hands it over, and
    goes through a quality-95 JPEG and PIL's decoder; otherwise it is an RGB image read from
    a file of frames, resized as it is."""
    if bgr:
        cv2 = opencv()
        ok, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if not ok:
            raise AnomalyError(f"OpenCV could not encode a {image.shape} frame as JPEG")
        with Image.open(io.BytesIO(jpeg.tobytes())) as decoded:
            rgb = decoded.convert("RGB")
    else:
        rgb = Image.fromarray(image)
    crop = pil_resize_crop(rgb)  # (224, 224, 3)
    return torch.from_numpy(np.ascontiguousarray(crop.transpose(2, 0, 1)))[None]


def frame_pixels(mode: str, folder: bool = False) -> str:
    """The pixel format a decoder hands to :func:`crop_frame`: OpenCV's BGR for the authors'
    path on a video, RGB otherwise."""
    return "bgr24" if mode == "authors" and not folder else "rgb24"


def crop_frame(image: np.ndarray, mode: str = "native", pixels: str = "rgb24") -> torch.Tensor:
    """One decoded frame (H, W, 3) uint8 in ``pixels`` -> its (1, 3, 224, 224) uint8 crop by
    the ``mode`` path (see :func:`frame_pixels`)."""
    if mode == "authors":
        return authors_crop(image, bgr=pixels == "bgr24")
    if pixels != "rgb24":
        raise ValueError(f"the native path takes rgb24 frames, not {pixels}")
    return resize_crop(image[None])


def preprocessing_attrs(mode: str = "native") -> dict:
    """Every number of a frame path, for the store's provenance (``preprocessing``).

    The native record is what stores written before the authors' path existed hold (so they
    still take new videos and merge with new stores); it has no ``mode``, which reads as
    ``native`` (:func:`anomalyclip.store.meta.preprocessing_mode`)."""
    common = {
        "resize": "shorter side to 224, bicubic, antialiased (longer = int(224 * long / short))",
        "crop": "centre 224x224",
        "crop_rounding": "round((side - 224) / 2)",
        "size": backbone.CLIP_IMAGE_SIZE,
        "scale": "1/255",
        "mean": list(backbone.CLIP_MEAN),
        "std": list(backbone.CLIP_STD),
    }
    if mode == "native":
        return {
            **common,
            "implementation": "torch uint8 bicubic antialias (<= 2 grey levels from PIL)",
        }
    if mode != "authors":
        raise AnomalyError(f"preprocessing mode {mode!r}: expected one of {PREPROCESS_MODES}")
    return {
        "mode": "authors",
        "frames": "decoded BGR (OpenCV's conversion), JPEG quality 95 4:2:0 by OpenCV, "
        "decoded by PIL, convert('RGB'); folders of frames: PIL only",
        **common,
        "implementation": "PIL bicubic resize (torchvision Resize on PIL images)",
    }
