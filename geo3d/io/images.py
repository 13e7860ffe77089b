"""Reading and writing image files (PNG, JPEG, ...) with Pillow, with errors that name the file."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from geo3d.errors import CaptureError
from geo3d.utils.atomic import atomic_write_bytes


def _open(path: Path):
    from PIL import Image, UnidentifiedImageError

    try:
        image = Image.open(path)
        image.load()
    except FileNotFoundError:
        raise CaptureError(f"{path}: image file not found") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise CaptureError(f"{path}: unreadable image ({exc})") from None
    return image


def image_size(path: str | Path) -> tuple[int, int]:
    """``(width, height)`` of an image file, reading only its header."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    try:
        with Image.open(path) as image:
            return image.size
    except FileNotFoundError:
        raise CaptureError(f"{path}: image file not found") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise CaptureError(f"{path}: unreadable image ({exc})") from None


def read_image_uint8(path: str | Path) -> np.ndarray:
    """Decode a colour image to ``[H, W, 3]`` (RGB) or ``[H, W, 4]`` (RGBA) uint8.

    Greyscale and palette images are converted to RGB (RGBA if they carry transparency); 16-bit
    colour is reduced to 8 bits.
    """
    path = Path(path)
    image = _open(path)
    has_alpha = image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info)
    if image.mode.startswith("I;16") or image.mode == "I":
        arr = np.asarray(image, dtype=np.float64)
        arr = np.clip(np.round(arr / 257.0), 0, 255).astype(np.uint8)
        return np.repeat(arr[..., None], 3, axis=2)
    image = image.convert("RGBA" if has_alpha else "RGB")
    return np.ascontiguousarray(np.asarray(image, dtype=np.uint8))


def read_depth_png(path: str | Path, scale: float = 1000.0) -> np.ndarray:
    """Decode a 16-bit depth PNG (integer units, 0 = invalid) to ``[H, W]`` float32 metres.

    Args:
        scale: integer units per metre (1000 for millimetres, as in 7-Scenes, TUM uses 5000).
    """
    path = Path(path)
    image = _open(path)
    arr = np.asarray(image)
    if arr.ndim != 2 or arr.dtype.kind not in "ui":
        raise CaptureError(f"{path}: expected a single-channel 16-bit depth image, got mode {image.mode}")
    return (arr.astype(np.float32) / np.float32(scale)).astype(np.float32)


def encode_png(pixels: np.ndarray) -> bytes:
    """PNG bytes of ``[H, W]``, ``[H, W, 3]`` or ``[H, W, 4]`` uint8 (or ``[H, W]`` uint16)."""
    from PIL import Image

    arr = np.ascontiguousarray(pixels)
    if arr.dtype == np.uint16 and arr.ndim == 2:
        image = Image.fromarray(arr.astype(np.uint16), mode="I;16")
    elif arr.dtype == np.uint8 and (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (3, 4))):
        image = Image.fromarray(arr)
    else:
        raise ValueError(f"cannot write {arr.dtype}{list(arr.shape)} as PNG")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def write_png(path: str | Path, pixels: np.ndarray) -> Path:
    """Write ``pixels`` (see :func:`encode_png`) to ``path`` atomically."""
    return atomic_write_bytes(path, encode_png(pixels))
