"""The synthetic world: determinism, audio/mouth alignment, splits, dataset files."""

from __future__ import annotations

import json

import imageio_ffmpeg
import numpy as np
import pytest
import soundfile as sf
import typer
from typer.testing import CliRunner

from midas_cli.errors import MidasError
from midas_cli.synth import (EXPRESSION_PROMPTS, FPS, SAMPLES_PER_FRAME, expression_of_prompt,
                             make_clip, render_clip, render_frame, render_reference,
                             write_dataset)
from midas_cli.synth.expressions import expression_per_frame, random_prompt_timeline
from midas_cli.synth.pose import interpolate_keyframes
from midas_cli.synth.splits import PURPOSE_DATASET, split_of, stream


def _clip(seconds=12.0, seed=0, split="train", listener=True):
    return make_clip(np.random.default_rng(seed), seconds, split, listener=listener)


def _frame_rms(audio: np.ndarray) -> np.ndarray:
    return np.sqrt((audio.reshape(-1, SAMPLES_PER_FRAME).astype(np.float64) ** 2).mean(1))


def test_render_is_deterministic_and_identities_differ():
    c = _clip(4.0)
    a = render_clip(c.identity, c.mouth, c.pose, c.expression, c.listening, size=64)
    b = render_clip(c.identity, c.mouth, c.pose, c.expression, c.listening, size=64)
    assert a.dtype == np.uint8 and a.shape == (c.n_frames, 64, 64, 3)
    assert np.array_equal(a, b)
    other = render_clip(c.identity + 1, c.mouth, c.pose, c.expression, c.listening, size=64)
    assert np.abs(a.astype(int) - other).mean() > 5
    refs = {render_reference(i, 64).tobytes() for i in range(0, 1000, 7)}
    assert len(refs) == len(range(0, 1000, 7))  # every identity looks different


def test_same_seed_gives_same_clip_and_video():
    c1, c2 = _clip(3.0, seed=5), _clip(3.0, seed=5)
    assert np.array_equal(c1.audio, c2.audio) and c1.identity == c2.identity
    assert np.array_equal(c1.render(64), c2.render(64))
    assert not np.array_equal(c1.audio, _clip(3.0, seed=6).audio)


def test_mouth_classes_and_expressions_look_different():
    base = render_frame(3, 0, 0, None, 128).astype(int)
    for mouth in (1, 2, 3):
        assert np.abs(render_frame(3, mouth, 0, None, 128) - base).sum() > 2000
    for expr in (1, 2, 3):
        assert np.abs(render_frame(3, 0, expr, None, 128) - base).sum() > 2000


def test_closed_mouth_frames_are_silent_and_open_frames_sound():
    c = _clip(20.0, seed=1)
    rms = _frame_rms(c.audio)
    assert (c.mouth == 0).any() and (c.mouth > 0).any()
    assert rms[c.mouth == 0].max() < 2e-3
    assert rms[c.mouth > 0].min() > 0.02
    assert len(c.audio) == c.n_frames * SAMPLES_PER_FRAME


def test_listening_frames_are_where_only_the_other_side_speaks():
    c = _clip(30.0, seed=2)
    assert c.listening.any()
    other = _frame_rms(c.listen_audio)
    assert np.all(c.mouth[c.listening] == 0)
    assert other[~c.listening].max() < 2e-3
    assert (other[c.listening] > 0.02).mean() > 0.5


def test_clip_starts_at_the_reference_pose():
    c = _clip(4.0)
    assert np.all(c.pose[0] == 0)
    assert c.pose_keyframes[0]["t"] == 0.0
    assert np.allclose(interpolate_keyframes(c.pose_keyframes, c.n_frames), c.pose)


def test_pose_json_matches_the_media_loader(tmp_path):
    pose_mod = pytest.importorskip("midas_cli.media.pose")
    c = _clip(6.0)
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"version": 1, "keyframes": c.pose_keyframes}))
    loaded = pose_mod.load_pose(path, c.n_frames, fps=FPS)
    assert np.allclose(loaded, c.pose, atol=1e-4)


def test_every_prompt_maps_back_to_its_expression():
    assert len(EXPRESSION_PROMPTS) >= 4
    for cls, texts in EXPRESSION_PROMPTS.items():
        assert len(texts) >= 4
        assert all(expression_of_prompt(t) == cls for t in texts)
    assert expression_of_prompt("") == 0
    prompts = random_prompt_timeline(np.random.default_rng(0), 30.0)
    assert prompts[0][0] == 0.0 and len(prompts) >= 3
    per_frame = expression_per_frame(prompts, int(30 * FPS))
    for t, text in prompts:
        assert per_frame[int(round(t * FPS))] == expression_of_prompt(text)


def test_train_and_test_splits_share_no_identity_or_voice():
    def ids(split):
        clips = [make_clip(stream(PURPOSE_DATASET, split, 0, i), 0.5, split, listener=True)
                 for i in range(60)]
        return ({c.identity for c in clips},
                {c.voice for c in clips} | {c.listen_voice for c in clips})

    train_ids, train_voices = ids("train")
    test_ids, test_voices = ids("test")
    assert not train_ids & test_ids and not train_voices & test_voices
    assert all(split_of(i) == "train" for i in train_ids | train_voices)
    assert all(split_of(i) == "test" for i in test_ids | test_voices)


def test_write_dataset_writes_the_manifest_and_its_files(tmp_path):
    manifest = write_dataset(tmp_path / "ds", clips=2, seconds=2.0, seed=3, split="test",
                             size=64, progress=False)
    entries = [json.loads(line) for line in manifest.read_text().splitlines()]
    assert [e["id"] for e in entries] == ["test-000000", "test-000001"]
    for e in entries:
        for key in ("video", "audio", "ref", "pose", "prompts", "truth", "listen_audio"):
            if key in e:
                assert (manifest.parent / e[key]).is_file(), key
        assert e["fps"] == 12.5 and e["width"] == e["height"] == 64 and e["split"] == "test"
        n, secs = imageio_ffmpeg.count_frames_and_secs(str(manifest.parent / e["video"]))
        assert n == 25 and abs(secs - 2.0) < 0.1
        audio, sr = sf.read(manifest.parent / e["audio"], dtype="float32")
        assert sr == 16000 and len(audio) == 25 * SAMPLES_PER_FRAME
        truth = json.loads((manifest.parent / e["truth"]).read_text())
        assert len(truth["mouth"]) == len(truth["pose"]) == len(truth["listening"]) == 25
        assert split_of(e["identity"]) == "test"


def test_an_interrupted_write_dataset_leaves_no_manifest(tmp_path, monkeypatch):
    # training makes the dataset when manifest.jsonl is missing and trusts it when present, so
    # a run cut off after one clip must not leave a one-clip manifest behind
    import midas_cli.synth.dataset as dataset

    real, calls = dataset.write_clip, []

    def write_then_fail(out_dir, clip_id, clip, size):
        if calls:
            raise KeyboardInterrupt
        calls.append(clip_id)
        return real(out_dir, clip_id, clip, size)

    monkeypatch.setattr(dataset, "write_clip", write_then_fail)
    with pytest.raises(KeyboardInterrupt):
        write_dataset(tmp_path / "ds", clips=3, seconds=1.0, seed=0, size=64, progress=False)
    assert calls == ["train-000000"]
    assert not (tmp_path / "ds" / "manifest.jsonl").exists()
    monkeypatch.setattr(dataset, "write_clip", real)
    manifest = write_dataset(tmp_path / "ds", clips=3, seconds=1.0, seed=0, size=64,
                             progress=False)
    assert len(manifest.read_text().splitlines()) == 3
    assert not list((tmp_path / "ds").glob(".*partial*"))


def test_synth_command_runs_and_rejects_a_bad_split(tmp_path):
    from midas_cli.cli.synth_cmd import synth

    app = typer.Typer()
    app.command("synth")(synth)
    app.command("noop")(lambda: None)  # two commands: keep "synth" as a sub-command
    runner = CliRunner()
    res = runner.invoke(app, ["synth", "--out", str(tmp_path / "d"), "--clips", "1",
                              "--seconds", "1", "--size", "64"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "d" / "manifest.jsonl").is_file()
    with pytest.raises(MidasError, match="--split"):
        synth(out=tmp_path / "e", clips=1, seconds=1.0, seed=0, split="valid", size=64)
    with pytest.raises(MidasError, match="--size"):
        synth(out=tmp_path / "e", clips=1, seconds=1.0, seed=0, split="train", size=63)


def test_write_mp4_works_with_imageio_ffmpeg_0_5(tmp_path, monkeypatch):
    # imageio-ffmpeg 0.5.x, which pyproject allows, asserts a float fps (a Fraction stopped
    # the synthetic data on such an install); later versions take either and mean the same rate
    from midas_cli.synth.mp4 import write_mp4

    real = imageio_ffmpeg.write_frames

    def write_frames_0_5(*args, fps, **kwargs):
        assert isinstance(fps, (float, int)), "fps must be float"
        return real(*args, fps=fps, **kwargs)

    monkeypatch.setattr(imageio_ffmpeg, "write_frames", write_frames_0_5)
    path = tmp_path / "clip.mp4"
    write_mp4(path, np.zeros((5, 16, 16, 3), np.uint8))
    n, secs = imageio_ffmpeg.count_frames_and_secs(str(path))
    assert n == 5 and abs(secs - 5 / 12.5) < 0.05


def test_write_dataset_writes_the_same_files_with_several_workers(tmp_path):
    one = write_dataset(tmp_path / "one", clips=4, seconds=1.0, seed=5, size=64, progress=False)
    two = write_dataset(tmp_path / "two", clips=4, seconds=1.0, seed=5, size=64, progress=False, workers=3)
    assert one.read_text() == two.read_text()
    files = sorted(p.relative_to(one.parent) for p in one.parent.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(two.parent) for p in two.parent.rglob("*") if p.is_file())
    assert len(files) > 4 * 5 and not any("partial" in str(f) for f in files)
    for f in files:
        assert (one.parent / f).read_bytes() == (two.parent / f).read_bytes(), f
