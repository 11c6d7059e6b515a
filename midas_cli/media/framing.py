"""Real photos in: the reference framed the way training faces are, and judged against the checkpoint.

`frame_reference` is the one function `generate`, `batch` and `serve` call to turn a photo
into the model's reference image: the face is detected and cropped like `midas prepare`
crops training clips (midas_cli/prepare/crop.py), so a small face in a large portrait works
like a close-up. A photo that is already framed that way (every synthetic reference, a
head-and-shoulders shot) keeps today's plain centre crop bit for bit; so does a photo with no
face found, or any photo when the face extra is not installed.

`domain_gap` measures how far a reference lies from what the checkpoint's autoencoder can
represent: its own reconstruction PSNR. `domain_warning` turns that into one line for stderr.
"""

from __future__ import annotations

import os

import numpy as np

# Reconstruction PSNR (dB) of a reference through the demo checkpoint's autoencoder, measured:
# synthetic references 28.4-32.0 dB (40 identities, 128 px), real photos 16.3-21.0 dB (Grace Hopper
# framed and centre-cropped, carphone crops). The line sits midway.
DOMAIN_PSNR_DB = 24.0
ALREADY_FRAMED_IOU = 0.7  # the face crop and the centre crop overlap this much (≈ zoom < 1.2): keep the centre crop
DETECT_LONG_SIDE = 800


def _iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _centre_box(w: int, h: int, width: int, height: int):
    target = width / height
    if w / h > target:
        cw = h * target
        return ((w - cw) / 2, 0.0, (w + cw) / 2, float(h))
    ch = w / target
    return (0.0, (h - ch) / 2, float(w), (h + ch) / 2)


def face_box(rgb: np.ndarray, width: int, height: int, backend: str = "auto"):
    """The (x0, y0, x1, y1) box framing the largest face like training clips, or None (no face, no
    extra, or one installed that cannot load, e.g. mediapipe's OpenCV without libGL)."""
    from midas_cli.errors import MidasError
    from midas_cli.prepare import faces

    if not faces.available():
        return None
    from midas_cli.prepare.crop import CENTRE, SIDE_PER_FACE

    try:
        fb = faces.face_backend(backend)
    except MidasError:
        return None
    h, w = rgb.shape[:2]
    k = min(1.0, DETECT_LONG_SIDE / max(h, w))
    small = rgb if k == 1.0 else np.asarray(_resize(rgb, round(w * k), round(h * k)))
    # coarse to fine: a photo is framed once, so a small face in a large photo is worth a second
    # of searching at full resolution (the detector finds faces down to ~40 px boxes when upsampled)
    attempts = [(small, k, 0), (small, k, 1)] + ([(rgb, 1.0, 1)] if k < 1.0 else [])
    found = []
    for img, scale, upsample in attempts:
        found = [f.scaled(1 / scale) for f in fb.detect(img, upsample)]
        if found:
            break
    if not found:
        return None
    face = fb.refine(rgb, found[0])
    side_h = SIDE_PER_FACE * face.size  # the crop's height; its width follows the model's aspect
    side_w = side_h * width / height
    x0, y0 = face.centre[0] - CENTRE[0] * side_w, face.centre[1] - CENTRE[1] * side_h
    return (float(x0), float(y0), float(x0 + side_w), float(y0 + side_h))


def _resize(rgb, w, h):
    from PIL import Image

    return Image.fromarray(rgb).resize((w, h), Image.Resampling.LANCZOS)


def frame_reference(photo: str | os.PathLike | np.ndarray, width: int, height: int,
                    backend: str = "auto") -> np.ndarray:
    """A photo (path or uint8 RGB array) → uint8 (height, width, 3), the face framed as in training."""
    from PIL import Image

    from midas_cli.media.image import fit_to, open_rgb

    img = Image.fromarray(np.asarray(photo, dtype=np.uint8)) if isinstance(photo, np.ndarray) else open_rgb(photo)
    rgb = np.asarray(img, dtype=np.uint8)
    box = face_box(rgb, width, height, backend)
    w, h = img.size
    centre_box = _centre_box(w, h, width, height)
    if box is not None:
        box = _inside(box, centre_box, w, h)
    if box is None or _iou(box, centre_box) >= ALREADY_FRAMED_IOU:
        return np.asarray(fit_to(img, width, height), dtype=np.uint8).copy()
    return np.asarray(img.resize((width, height), Image.Resampling.LANCZOS, box=box, reducing_gap=3.0),
                      dtype=np.uint8).copy()


def _inside(box, centre_box, w: int, h: int):
    """The face box, never larger than the photo's own centre crop (framing zooms in, never out
    into padding: a face closer than training framing stays a close-up), moved inside the photo."""
    bw, bh = box[2] - box[0], box[3] - box[1]
    k = min(1.0, (centre_box[2] - centre_box[0]) / bw)
    cx, cy, bw, bh = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2, bw * k, bh * k
    x0 = min(max(cx - bw / 2, 0.0), w - bw)
    y0 = min(max(cy - bh / 2, 0.0), h - bh)
    return (x0, y0, x0 + bw, y0 + bh)


def domain_gap(model, ref: np.ndarray) -> float:
    """The reference's own reconstruction PSNR (dB) through the checkpoint's autoencoder."""
    import torch

    from midas_cli.model.autoencoder import images_to_tensor, tensor_to_images

    with torch.inference_mode():
        x = images_to_tensor(ref[None], device=model.device, dtype=model.dtype)
        back = tensor_to_images(model.autoencoder.decode(model.autoencoder.encode(x), model.cfg.latent_grid))[0]
    mse = np.mean((back.astype(np.float64) - ref.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0 ** 2 / max(mse, 1e-10)))


def domain_warning(model, ref: np.ndarray, checkpoint: str | None = None) -> str | None:
    """One line for stderr when `ref` lies far outside the checkpoint's faces, else None."""
    psnr = domain_gap(model, ref)
    if psnr >= DOMAIN_PSNR_DB:
        return None
    trained_on = "synthetic faces (the demo checkpoint)" if checkpoint is None else "different faces"
    return (f"warning: this checkpoint was trained on {trained_on} and cannot represent this photo "
            f"(its autoencoder reconstructs it at {psnr:.1f} dB < {DOMAIN_PSNR_DB:g}); expect noise. "
            f"To render real faces, train on real footage: `midas prepare VIDEOS --out DIR` then `midas train`")
