"""Media in and out: formats, modes, fitting, timelines, and the ffmpeg writer's guarantees."""

import json
import subprocess

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from midas_cli.errors import MidasError
from midas_cli.media.audio import load_audio
from midas_cli.media.image import load_reference
from midas_cli.media.pose import load_pose, pose_to_json
from midas_cli.media.prompts import load_prompts, prompt_at
from midas_cli.media.video_in import probe_video, read_frames
from midas_cli.media.video_out import VideoWriter, write_video


def _tone(rate, seconds=0.5):
    t = np.arange(int(rate * seconds)) / rate
    return (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


@pytest.mark.parametrize("fmt, subtype, rate, channels", [
    ("wav", "PCM_U8", 8000, 1), ("wav", "PCM_16", 44100, 2), ("wav", "PCM_32", 48000, 1), ("wav", "FLOAT", 22050, 2),
    ("flac", "PCM_24", 32000, 2), ("ogg", "VORBIS", 44100, 1), ("mp3", "MPEG_LAYER_III", 44100, 2),
])
def test_audio_formats_load_as_16k_mono(tmp_path, fmt, subtype, rate, channels):
    x = _tone(rate)
    data = np.stack([x] * channels, 1) if channels > 1 else x
    path = tmp_path / f"a.{fmt}"
    sf.write(path, data, rate, subtype=subtype, format=fmt.upper() if fmt != "mp3" else "MP3")
    audio = load_audio(path)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert abs(len(audio) / 16000 - 0.5) < 0.06  # mp3 adds encoder padding
    assert 0.2 < np.abs(audio).max() <= 1.0


def test_audio_ffmpeg_fallback_reads_m4a(tmp_path):
    import imageio_ffmpeg

    wav = tmp_path / "a.wav"
    sf.write(wav, _tone(16000, 1.0), 16000)
    m4a = tmp_path / "a.m4a"
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", str(wav), "-c:a", "aac", str(m4a)], check=True)
    assert abs(len(load_audio(m4a)) / 16000 - 1.0) < 0.1


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "CMYK", "P", "I;16", "LA"])
def test_images_of_any_mode_become_rgb(tmp_path, mode):
    img = Image.new("RGB", (40, 30), (200, 100, 50)).convert(mode)
    path = tmp_path / ("a.jpg" if mode == "CMYK" else "a.png")
    img.save(path)
    out = load_reference(path, 32, 32)
    assert out.shape == (32, 32, 3) and out.dtype == np.uint8


def test_fitting_keeps_circles_round(tmp_path):
    img = Image.new("RGB", (300, 100), "white")
    from PIL import ImageDraw

    ImageDraw.Draw(img).ellipse((110, 10, 190, 90), fill="black")  # a circle of radius 40 in the middle
    img.save(tmp_path / "wide.png")
    out = load_reference(tmp_path / "wide.png", 64, 64)
    dark = out.mean(-1) < 128
    rows, cols = np.where(dark)
    height, width = rows.max() - rows.min(), cols.max() - cols.min()
    assert abs(height - width) <= 2  # not stretched


def test_pose_keyframes_interpolate_and_hold(tmp_path):
    path = tmp_path / "pose.json"
    path.write_text(json.dumps({"version": 1, "keyframes": [{"t": 0.08, "yaw": 10}, {"t": 0.24, "yaw": 30, "x": 0.1}]}))
    pose = load_pose(path, 5)
    assert pose.shape == (5, 6)
    np.testing.assert_allclose(pose[:, 0], [10, 10, 20, 30, 30], atol=1e-4)
    np.testing.assert_allclose(pose[:, 3], [0, 0, 0.05, 0.1, 0.1], atol=1e-5)
    again = tmp_path / "again.json"
    again.write_text(json.dumps(pose_to_json(pose)))
    np.testing.assert_allclose(load_pose(again, 5), pose, atol=1e-5)


def test_prompt_timeline(tmp_path):
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"prompts": [{"t": 1.0, "text": "smile"}, {"t": 2.0, "text": "frown"}]}))
    prompts = load_prompts(path, duration=3.0)
    assert [prompt_at(prompts, t) for t in (0.5, 1.0, 1.9, 2.5)] == ["", "smile", "smile", "frown"]
    with pytest.raises(MidasError, match="after the end of the clip"):
        load_prompts(path, duration=1.5)


def test_video_writer_output_plays_anywhere(tmp_path):
    wav = tmp_path / "a.wav"
    sf.write(wav, _tone(16000, 2.0), 16000)
    frames = [np.full((49, 65, 3), i * 10, np.uint8) for i in range(25)]  # odd size
    out = tmp_path / "v.mp4"
    write_video(out, frames, fps=12.5, audio_path=wav)
    info = probe_video(out)
    assert (info.video_codec, info.audio_codec, info.pix_fmt) == ("h264", "aac", "yuv420p")
    assert info.width % 2 == 0 and info.height % 2 == 0
    assert abs(info.n_frames - 25) <= 1 and abs(info.fps - 12.5) < 1e-6
    assert len(list(read_frames(out))) == info.n_frames


def test_a_failing_render_leaves_no_file_and_keeps_the_old_one(tmp_path):
    out = tmp_path / "v.mp4"
    out.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with VideoWriter(out, 32, 32) as w:
            w.write(np.zeros((32, 32, 3), np.uint8))
            raise RuntimeError("boom")
    assert out.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["v.mp4"]


def test_png_folder_output(tmp_path):
    out = tmp_path / "frames"
    with VideoWriter(out, 16, 8) as w:
        for _ in range(3):
            w.write(np.zeros((8, 16, 3), np.uint8))
    assert sorted(p.name for p in out.iterdir()) == ["000000.png", "000001.png", "000002.png"]
    assert len(list(read_frames(out))) == 3


def test_read_frames_fits_size(tmp_path):
    out = tmp_path / "v.mp4"
    write_video(out, [np.zeros((48, 64, 3), np.uint8)] * 4)
    frames = list(read_frames(out, width=32, height=32))
    assert len(frames) == 4 and frames[0].shape == (32, 32, 3)


@pytest.mark.parametrize("name, content, problem", [
    ("not_video.mp4", b"hello", "not a readable video"),
    ("empty.mp4", b"", "empty"),
])
def test_bad_videos(tmp_path, name, content, problem):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(MidasError, match=problem):
        list(read_frames(tmp_path / name))
