"""Real photos in `generate`: framed like the training faces, and judged against the checkpoint."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from prepare_media import SPEECH, grace_hopper, need_face_models


def small_face_portrait(path):
    """Grace Hopper's portrait shrunk to a quarter and placed off-centre in a large grey photo."""
    face = Image.open(grace_hopper()).convert("RGB")
    face = face.resize((face.width // 4, face.height // 4), Image.Resampling.LANCZOS)
    rng = np.random.default_rng(0)
    canvas = Image.fromarray((rng.normal(120, 12, (1200, 900, 3))).clip(0, 255).astype(np.uint8))
    canvas.paste(face, (560, 300))
    canvas.save(path)
    return path


def test_small_face_in_a_large_portrait_is_framed_like_a_close_up(tmp_path):
    need_face_models()
    from midas_cli.media.framing import frame_reference
    from midas_cli.media.image import load_reference
    from midas_cli.prepare.crop import SIDE_PER_FACE
    from midas_cli.prepare.faces import face_backend

    photo = small_face_portrait(tmp_path / "portrait.png")
    framed = frame_reference(photo, 128, 128)
    assert framed.shape == (128, 128, 3)
    fb = face_backend()
    faces = fb.detect(framed, 1)
    assert faces, "no face in the framed reference"
    face = fb.refine(framed, faces[0])
    assert abs(face.size - 128 / SIDE_PER_FACE) < 0.2 * 128 / SIDE_PER_FACE  # sized like training crops
    assert np.abs(face.centre - 64).max() < 8  # and centred
    assert not fb.detect(load_reference(photo, 128, 128), 1)  # the old centre crop: face too small to find


def test_synthetic_references_are_unchanged(tmp_path):
    from midas_cli.media.framing import frame_reference
    from midas_cli.media.image import load_reference
    from midas_cli.synth.render import render_reference

    for identity in range(12):
        path = tmp_path / f"id{identity}.png"
        Image.fromarray(render_reference(identity, 128)).save(path)
        assert np.array_equal(frame_reference(path, 128, 128), load_reference(path, 128, 128)), identity


def test_photo_without_a_face_keeps_the_centre_crop(tmp_path):
    from midas_cli.media.framing import frame_reference
    from midas_cli.media.image import load_reference

    yy, xx = np.mgrid[0:300, 0:500]
    Image.fromarray(np.stack([xx % 256, yy % 256, (xx + yy) % 256], -1).astype(np.uint8)).save(tmp_path / "g.png")
    assert np.array_equal(frame_reference(tmp_path / "g.png", 128, 128), load_reference(tmp_path / "g.png", 128, 128))


@pytest.fixture(scope="module")
def demo_model():
    from midas_cli.model.checkpoint import load_model

    return load_model(None)


def test_domain_warning_fires_for_a_real_photo_and_not_for_a_synthetic_face(demo_model):
    from midas_cli.media.framing import domain_warning, frame_reference
    from midas_cli.synth.render import render_reference

    real = frame_reference(grace_hopper(), 128, 128)
    line = domain_warning(demo_model, real)
    assert line is not None and "synthetic faces" in line and "midas prepare" in line and "\n" not in line
    for identity in (0, 7, 21):
        assert domain_warning(demo_model, render_reference(identity, 128)) is None


@pytest.mark.slow
def test_generate_prints_the_domain_warning_once_and_still_renders(tmp_path):
    from typer.testing import CliRunner

    from midas_cli.cli.app import app

    out = tmp_path / "hopper.mp4"
    r = CliRunner().invoke(app, ["generate", "--audio", str(SPEECH), "--ref", str(grace_hopper()),
                                 "--out", str(out), "--duration", "0.48"])
    assert r.exit_code == 0, r.output
    assert out.is_file() and r.stderr.count("trained on synthetic faces") == 1


def test_a_face_backend_that_cannot_load_leaves_the_centre_crop(monkeypatch, tmp_path):
    """An installed but unloadable backend (mediapipe's OpenCV without libGL, and no dlib) must not
    stop `generate`: the photo is centre-cropped as without the extra."""
    from midas_cli.errors import MidasError
    from midas_cli.media import framing
    from midas_cli.prepare import faces

    def broken(name="auto"):
        raise MidasError("--face-backend mediapipe: cannot load mediapipe (libGL.so.1); install libGL")

    monkeypatch.setattr(faces, "available", lambda: True)
    monkeypatch.setattr(faces, "face_backend", broken)
    img = np.random.default_rng(0).integers(0, 255, (200, 300, 3), dtype=np.uint8)
    assert framing.face_box(img, 128, 128) is None
    assert framing.frame_reference(img, 128, 128).shape == (128, 128, 3)
