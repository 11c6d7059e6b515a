"""The reference photo: any common image → RGB uint8 at the model's size, without distortion.

Any mode is accepted (RGBA is composited on white, greyscale, CMYK, palette, 16-bit); EXIF
orientation is applied; the image is centre-cropped to the target aspect ratio, then resized
with Lanczos. Images over `MAX_PIXELS` are refused before they are decoded (image bombs).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from midas_cli.errors import MidasError

MAX_PIXELS = 50_000_000


def _to_rgb(img):
    from PIL import Image

    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if arr.max() > 255 else 255.0
        img = Image.fromarray((arr / top * 255).round().astype(np.uint8), "L")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        background = Image.new("RGB", img.size, (255, 255, 255))
        rgba = img.convert("RGBA")
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return img.convert("RGB")


def fit_to(img, width: int, height: int):
    """Centre-crop to width:height, then resize (no stretching)."""
    from PIL import Image

    w, h = img.size
    target = width / height
    if w / h > target:  # too wide
        new_w = max(1, round(h * target))
        left = (w - new_w) // 2
        img = img.crop((left, 0, left + new_w, h))
    else:
        new_h = max(1, round(w / target))
        top = (h - new_h) // 2
        img = img.crop((0, top, w, top + new_h))
    return img.resize((width, height), Image.LANCZOS)


def load_reference(path: str | os.PathLike, width: int, height: int) -> np.ndarray:
    """Read a png/jpg/webp (any mode) as uint8 (height, width, 3)."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    if not path.exists():
        raise MidasError(f"{path}: no such file")
    if path.is_dir():
        raise MidasError(f"{path}: is a folder, not an image")
    if path.stat().st_size == 0:
        raise MidasError(f"{path}: empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                if img.width * img.height > MAX_PIXELS:
                    raise MidasError(f"{path}: image too large ({img.width}×{img.height} pixels; "
                                     f"limit {MAX_PIXELS // 1_000_000} megapixels)")
                img.load()
                img = ImageOps.exif_transpose(img)
                rgb = _to_rgb(img)
    except MidasError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise MidasError(f"{path}: image too large (decompression bomb protection)") from None
    except UnidentifiedImageError:
        raise MidasError(f"{path}: not an image (png, jpg or webp expected)") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise MidasError(f"{path}: corrupt or truncated image ({e})") from None
    return np.asarray(fit_to(rgb, width, height), dtype=np.uint8).copy()
