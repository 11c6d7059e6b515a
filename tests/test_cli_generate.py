"""`midas generate`, `encode-ae`/`decode-ae`, `download` and `batch`, end to end on a tiny checkpoint."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image
from typer.testing import CliRunner

from midas_cli.cli.app import app
from midas_cli.media.video_in import probe_video

runner = CliRunner()


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    from midas_cli.conditions.text import build_word_tokenizer
    from midas_cli.model.checkpoint import save_checkpoint
    from midas_cli.model.config import preset
    from midas_cli.model.midas import MidasModel

    torch.manual_seed(0)
    model = MidasModel(preset("tiny"), tokenizer=build_word_tokenizer(["she smiles warmly", "a calm face"], 128))
    return save_checkpoint(model.eval(), tmp_path_factory.mktemp("ckpt") / "tiny")


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    d = tmp_path_factory.mktemp("media")
    t = np.arange(int(44100 * 1.3)) / 44100
    tone = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    sf.write(d / "talk.wav", np.stack([tone, tone * 0.5], 1), 44100, subtype="PCM_24")  # stereo 44.1k 24-bit
    sf.write(d / "other.flac", tone, 44100)
    sf.write(d / "short.wav", tone[:4000], 44100)  # under one chunk
    sf.write(d / "silence.wav", np.zeros(16000, np.float32), 16000)
    Image.fromarray((np.random.default_rng(0).random((90, 70, 4)) * 255).astype(np.uint8), "RGBA").save(d / "face.png")
    (d / "pose.json").write_text(json.dumps({"version": 1, "keyframes": [{"t": 0, "yaw": 0}, {"t": 1.0, "yaw": 20}]}))
    (d / "mood.json").write_text(json.dumps({"version": 1, "prompts": [{"t": 0, "text": "a calm face"},
                                                                        {"t": 0.5, "text": "she smiles warmly"}]}))
    return d


def _generate(args, ckpt):
    return runner.invoke(app, ["generate", "--checkpoint", str(ckpt), "--device", "cpu", *args])


def test_generate_writes_a_playable_mp4_with_audio(tiny_checkpoint, media, tmp_path):
    out = tmp_path / "take1.mp4"
    r = _generate(["--audio", str(media / "talk.wav"), "--ref", str(media / "face.png"), "--pose", str(media / "pose.json"),
                   "--prompts", str(media / "mood.json"), "--listen-audio", str(media / "other.flac"), "--out", str(out)],
                  tiny_checkpoint)
    assert r.exit_code == 0, r.output
    info = probe_video(out)
    assert (info.video_codec, info.audio_codec, info.pix_fmt) == ("h264", "aac", "yuv420p")
    assert (info.width, info.height) == (64, 64)
    assert abs(info.n_frames - 1.3 * 12.5) <= 1
    assert abs(info.audio_duration - 1.3) < 0.15
    assert "real-time factor" in r.stderr
    assert not list(tmp_path.glob(".*partial*"))


def test_generate_is_deterministic_with_seed(tiny_checkpoint, media, tmp_path):
    from midas_cli.media.video_in import read_frames

    outs = []
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        out = tmp_path / f"{name}.mp4"
        r = _generate(["--audio", str(media / "silence.wav"), "--ref", str(media / "face.png"), "--seed", str(seed),
                       "--out", str(out)], tiny_checkpoint)
        assert r.exit_code == 0, r.output
        outs.append(np.stack(list(read_frames(out))))
    assert np.array_equal(outs[0], outs[1]) and not np.array_equal(outs[0], outs[2])


def test_a_clip_shorter_than_one_chunk_works(tiny_checkpoint, media, tmp_path):
    out = tmp_path / "short.mp4"
    r = _generate(["--audio", str(media / "short.wav"), "--ref", str(media / "face.png"), "--out", str(out)],
                  tiny_checkpoint)
    assert r.exit_code == 0, r.output
    assert probe_video(out).n_frames == 1  # 0.09 s → one frame at 12.5 fps


def _bad_inputs(media: Path, tmp: Path):
    (tmp / "empty.wav").write_bytes(b"")
    (tmp / "text.wav").write_text("not audio at all")
    (tmp / "text.png").write_text("not an image")
    png = (media / "face.png").read_bytes()
    (tmp / "truncated.png").write_bytes(png[: len(png) // 3])
    (tmp / "bad.json").write_text("{nope")
    (tmp / "pose_type.json").write_text(json.dumps({"keyframes": [{"t": "zero", "yaw": 1}]}))
    (tmp / "pose_back.json").write_text(json.dumps({"keyframes": [{"t": 0.5}, {"t": 0.2}]}))
    (tmp / "pose_range.json").write_text(json.dumps({"keyframes": [{"t": 0, "yaw": 400}]}))
    (tmp / "prompts_late.json").write_text(json.dumps({"prompts": [{"t": 0, "text": "a"}, {"t": 50, "text": "b"}]}))
    (tmp / "prompts_empty.json").write_text(json.dumps({"prompts": [{"t": 0, "text": ""}]}))
    (tmp / "prompts_list.json").write_text(json.dumps([1, 2, 3]))
    # an image bomb: a PNG header claiming 100k × 100k pixels
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    bomb = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 100000, 100000, 8, 2, 0, 0, 0)) + chunk(b"IEND", b"")
    (tmp / "bomb.png").write_bytes(bomb)
    a, f = str(media / "talk.wav"), str(media / "face.png")
    return [
        (["--audio", str(tmp / "missing.wav"), "--ref", f], "missing.wav", "no such file"),
        (["--audio", str(tmp / "empty.wav"), "--ref", f], "empty.wav", "empty"),
        (["--audio", str(tmp / "text.wav"), "--ref", f], "text.wav", "not an audio file"),
        (["--audio", str(tmp), "--ref", f], str(tmp), "folder"),
        (["--audio", a, "--ref", str(tmp / "text.png")], "text.png", "not an image"),
        (["--audio", a, "--ref", str(tmp / "truncated.png")], "truncated.png", "truncated"),
        (["--audio", a, "--ref", str(tmp / "bomb.png")], "bomb.png", "too large"),
        (["--audio", a, "--ref", f, "--pose", str(tmp / "bad.json")], "bad.json", "malformed JSON"),
        (["--audio", a, "--ref", f, "--pose", str(tmp / "pose_type.json")], "pose_type.json", "keyframes[0].t"),
        (["--audio", a, "--ref", f, "--pose", str(tmp / "pose_back.json")], "pose_back.json", "times must increase"),
        (["--audio", a, "--ref", f, "--pose", str(tmp / "pose_range.json")], "pose_range.json", "400"),
        (["--audio", a, "--ref", f, "--prompts", str(tmp / "prompts_late.json")], "prompts_late.json", "after the end"),
        (["--audio", a, "--ref", f, "--prompts", str(tmp / "prompts_empty.json")], "prompts_empty.json", "prompts[0].text"),
        (["--audio", a, "--ref", f, "--prompts", str(tmp / "prompts_list.json")], "prompts_list.json", "not of type 'object'"),
        (["--audio", a, "--ref", f, "--steps", "0"], "--steps", "at least 1"),
        (["--audio", a, "--ref", f, "--guidance", "2"], "--guidance 2", "no text input in its diffusion head"),
        (["--audio", a, "--ref", f, "--guidance", "-1"], "--guidance -1", "must be ≥ 0"),
        (["--audio", a, "--ref", f, "--temperature", "-1"], "--temperature -1", "must be ≥ 0"),
        (["--audio", a, "--ref", f, "--duration", "-2"], "--duration", "positive"),
        (["--audio", a, "--ref", f, "--prompt", "   "], "--prompt", "empty"),
        (["--audio", a, "--ref", f, "--checkpoint", str(tmp / "no_ckpt")], "no_ckpt", "no such checkpoint"),
        (["--audio", a, "--ref", f, "--checkpoint", "someorg/not-cached"], "someorg/not-cached", "not in the Hugging Face cache"),
    ]


def test_bad_inputs_fail_with_one_line_and_no_output(tiny_checkpoint, media, tmp_path):
    cases = _bad_inputs(media, tmp_path)
    assert len(cases) >= 15
    for args, name, problem in cases:
        out = tmp_path / "out.mp4"
        full = ["generate", *args, "--out", str(out), "--device", "cpu"]
        if "--checkpoint" not in args:
            full += ["--checkpoint", str(tiny_checkpoint)]
        r = runner.invoke(app, full)
        assert r.exit_code != 0, (args, r.output)
        lines = [line for line in r.stderr.strip().splitlines() if line.strip()]
        assert "Traceback" not in r.output, (args, r.output)
        assert name in r.stderr and problem in r.stderr, (args, r.stderr)
        assert r.exception is None or isinstance(r.exception, SystemExit), (args, repr(r.exception))
        assert len(lines) <= 3, (args, r.stderr)  # one message (rich may wrap it on a narrow terminal)
        assert not out.exists() and not list(tmp_path.glob(".out*")), args


def test_existing_output_survives_a_failed_render(tiny_checkpoint, media, tmp_path):
    out = tmp_path / "keep.mp4"
    out.write_bytes(b"precious")
    r = _generate(["--audio", str(media / "talk.wav"), "--ref", str(tmp_path / "nope.png"), "--out", str(out)],
                  tiny_checkpoint)
    assert r.exit_code != 0 and out.read_bytes() == b"precious"


def test_generate_without_a_checkpoint_explains_the_demo(media, tmp_path, monkeypatch):
    import midas_cli.model.checkpoint as ck

    monkeypatch.setattr(ck, "demo_checkpoint_path", lambda: tmp_path / "absent")
    r = runner.invoke(app, ["generate", "--audio", str(media / "talk.wav"), "--ref", str(media / "face.png"),
                            "--out", str(tmp_path / "x.mp4")])
    assert r.exit_code == 1 and "demo checkpoint" in r.stderr


def test_subprocess_generate_then_ctrl_c_leaves_nothing(tiny_checkpoint, media, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    out = tmp_path / "real.mp4"
    cmd = [sys.executable, "-m", "midas_cli", "generate", "--audio", str(media / "talk.wav"), "--ref",
           str(media / "face.png"), "--checkpoint", str(tiny_checkpoint), "--device", "cpu", "--out", str(out)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    info = probe_video(out)
    assert info.video_codec == "h264" and info.audio_codec == "aac" and abs(info.n_frames - 16) <= 1

    long_out = tmp_path / "long.mp4"
    # an hour, so the render is surely still running when the signal lands (the tiny model
    # renders 120 s in 6 s on a fast machine); SIGINT back to its default in the child, since a
    # suite started in the background (`nohup … &`) inherits it ignored, and so would the render
    proc = subprocess.Popen(cmd[:-1] + [str(long_out), "--duration", "3600"], env=env, stderr=subprocess.PIPE,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while time.time() < deadline and not list(tmp_path.glob(".long.mp4.partial*")):
        time.sleep(0.2)
    assert list(tmp_path.glob(".long.mp4.partial*")), "the render never started writing"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0, err.decode(errors="replace")[-2000:]
    assert not long_out.exists() and not list(tmp_path.glob(".long*"))


def test_encode_then_decode_round_trip(tiny_checkpoint, tmp_path):
    from midas_cli.media.video_out import write_video

    frames = [np.full((64, 64, 3), 40 * i, np.uint8) for i in range(5)]
    video = tmp_path / "clip.mp4"
    write_video(video, frames)
    lat = tmp_path / "clip.latents.safetensors"
    r = runner.invoke(app, ["encode-ae", str(video), "--out", str(lat), "--checkpoint", str(tiny_checkpoint),
                            "--report", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    from safetensors import safe_open

    with safe_open(str(lat), "pt") as f:
        assert f.get_tensor("latents").shape == (5, 16, 8)
        assert f.metadata()["fps"] == "12.5" and f.metadata()["width"] == "64"
    assert "PSNR" in r.stderr
    back = tmp_path / "back.mp4"
    r = runner.invoke(app, ["decode-ae", str(lat), "--out", str(back), "--checkpoint", str(tiny_checkpoint), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert probe_video(back).n_frames == 5
    pngs = tmp_path / "pngs"
    r = runner.invoke(app, ["decode-ae", str(lat), "--out", str(pngs), "--checkpoint", str(tiny_checkpoint), "--device", "cpu"])
    assert r.exit_code == 0 and len(list(pngs.glob("*.png"))) == 5


def test_download_offline_is_a_clear_message(tmp_path):
    r = runner.invoke(app, ["download", "someorg/midas-3b", "--local-dir", str(tmp_path / "d")])
    assert r.exit_code == 1
    assert "someorg/midas-3b" in r.stderr and "offline" in r.stderr and "Traceback" not in r.output


def _batch_recipe(tmp_path, media, ckpt, n=4):
    jobs = [{"name": f"job{i}", "out": str(tmp_path / "out" / f"job{i}.mp4"), "seed": i} for i in range(n)]
    jobs.append({"name": "broken", "out": str(tmp_path / "out" / "broken.mp4"), "ref": str(tmp_path / "nope.png")})
    recipe = {"defaults": {"audio": str(media / "talk.wav"), "ref": str(media / "face.png"), "checkpoint": str(ckpt),
                           "duration": 4.0}, "jobs": jobs}
    path = tmp_path / "batch.yaml"
    import yaml

    path.write_text(yaml.safe_dump(recipe))
    return path


def test_batch_killed_mid_way_resumes(tiny_checkpoint, media, tmp_path):
    recipe = _batch_recipe(tmp_path, media, tiny_checkpoint)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "midas_cli", "batch", str(recipe), "--device", "cpu"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out_dir = tmp_path / "out"
    deadline = time.time() + 180
    while time.time() < deadline and not (out_dir / "job0.mp4").exists():
        time.sleep(0.1)
    proc.kill()  # a crash, not a clean stop
    proc.wait()
    first = {p.name for p in out_dir.glob("*.mp4")}
    assert "job0.mp4" in first and "job3.mp4" not in first
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 1  # the broken job fails, the rest succeed
    assert "job0: skipped (exists)" in done.stderr and "nope.png: no such" in done.stderr.replace("\n", "")
    assert {f"job{i}.mp4" for i in range(4)} <= {p.name for p in out_dir.glob("*.mp4")}
    assert not (out_dir / "broken.mp4").exists()
    for i in range(4):
        assert abs(probe_video(out_dir / f"job{i}.mp4").n_frames - 50) <= 1


def test_batch_splits_jobs_across_ranks(tiny_checkpoint, media, tmp_path):
    from midas_cli.cli.batch_cmd import run_batch

    recipe = _batch_recipe(tmp_path, media, tiny_checkpoint, n=3)
    results = run_batch(recipe, device="cpu", rank=1, world=2)
    assert [r["job"] for r in results] == ["job1", "broken"]
