"""The reference photo: any common image → RGB uint8 at the model's size, without distortion.

- Formats: whatever Pillow reads (png, jpg, webp expected); the first frame of animations.
- Modes: RGBA / LA / palette-with-transparency are composited on **white** (`BACKGROUND`) —
  a cut-out portrait on white looks like a studio photo, on black like a hole; greyscale,
  bilevel, CMYK and palette become RGB; 16-bit greyscale is scaled 0..65535 → 0..255.
- EXIF orientation is applied (`ImageOps.exif_transpose`), so phone photos stand upright.
- Fitting: centre-crop to the target aspect ratio, then resize with Lanczos (`fit_to`): a
  circle stays a circle whatever the photo's shape.
- Image bombs: a header announcing more than `MAX_PIXELS` pixels is refused before any pixel
  is decoded (Pillow's own `DecompressionBombError`/`Warning` become the same MidasError).
"""

from __future__ import annotations

import os
import warnings

import numpy as np

from midas_cli.errors import MidasError
from midas_cli.media.files import check_input_file

MAX_PIXELS = 50_000_000  # 50 megapixels: any camera photo, not a 100k × 100k bomb
BACKGROUND = (255, 255, 255)  # transparent pixels are composited on white

_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")


def to_rgb(img):
    """Any Pillow mode → an RGB image (transparency on `BACKGROUND`, 16-bit scaled to 8-bit)."""
    from PIL import Image

    if img.mode in _SIXTEEN_BIT or img.mode in ("I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if (img.mode in _SIXTEEN_BIT or arr.max(initial=0) > 255) else 255.0
        img = Image.fromarray(np.clip(arr / top * 255.0, 0, 255).round().astype(np.uint8), "L")
    if "transparency" in img.info and img.mode in ("P", "L", "RGB"):
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*BACKGROUND, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def fit_to(img, width: int, height: int):
    """Centre-crop a PIL image to width:height, then resize it with Lanczos (no stretching)."""
    from PIL import Image

    if width < 1 or height < 1:
        raise ValueError(f"target size must be positive, got {width}×{height}")
    w, h = img.size
    if (w, h) == (width, height):
        return img
    target = width / height
    if w / h > target:  # too wide: keep the full height, crop the sides
        crop_w = h * target
        box = ((w - crop_w) / 2, 0.0, (w + crop_w) / 2, float(h))
    else:  # too tall: keep the full width, crop top and bottom
        crop_h = w / target
        box = (0.0, (h - crop_h) / 2, float(w), (h + crop_h) / 2)
    return img.resize((width, height), Image.Resampling.LANCZOS, box=box, reducing_gap=3.0)


def fit_array(frame: np.ndarray, width: int, height: int) -> np.ndarray:
    """`fit_to` for a uint8 (H, W, 3) array."""
    if frame.shape[:2] == (height, width):
        return frame
    from PIL import Image

    return np.asarray(fit_to(Image.fromarray(frame), width, height), dtype=np.uint8)


def open_rgb(path: str | os.PathLike):
    """Open an image file as an upright RGB PIL image at its own size, or raise a MidasError."""
    path = check_input_file(path, "an image")
    return _decode(path, str(path))


def open_rgb_bytes(data: bytes, label: str = "image"):
    """`open_rgb` for an image held in memory (e.g. sent by a client); errors start with `label`."""
    import io

    if not data:
        raise MidasError(f"{label}: empty (0 bytes)")
    return _decode(io.BytesIO(data), label)


def _decode(source, label: str):
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(source) as img:
                if img.width * img.height > MAX_PIXELS:
                    raise MidasError(f"{label}: image too large ({img.width}×{img.height} pixels; "
                                     f"the limit is {MAX_PIXELS / 1e6:g} megapixels)")
                img.load()
                return to_rgb(ImageOps.exif_transpose(img))
    except MidasError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise MidasError(f"{label}: image too large (decompression bomb protection)") from None
    except UnidentifiedImageError:
        raise MidasError(f"{label}: not an image (png, jpg or webp expected)") from None
    except MemoryError:
        raise MidasError(f"{label}: image too large to decode (out of memory)") from None
    except Exception as e:  # Pillow's decoders raise OSError, SyntaxError, ValueError, struct.error, ...
        detail = str(e).strip() or type(e).__name__
        raise MidasError(f"{label}: corrupt or truncated image ({detail})") from None


def load_image(path: str | os.PathLike) -> np.ndarray:
    """An image file as uint8 (H, W, 3) at its own size (orientation applied)."""
    return np.asarray(open_rgb(path), dtype=np.uint8).copy()


def load_reference(path: str | os.PathLike, width: int, height: int) -> np.ndarray:
    """Read a png/jpg/webp (any mode) as uint8 (height, width, 3), centre-cropped and resized."""
    return np.asarray(fit_to(open_rgb(path), width, height), dtype=np.uint8).copy()
