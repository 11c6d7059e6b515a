"""Media in and out: formats, modes, fitting, timelines, the ffmpeg writer's guarantees, bad inputs."""

import json
import struct
import subprocess
import zlib

import imageio_ffmpeg
import numpy as np
import pytest
import soundfile as sf
from PIL import Image, ImageDraw

from midas_cli.errors import MidasError
from midas_cli.media import image as image_mod
from midas_cli.media.audio import SAMPLE_RATE, load_audio, write_wav
from midas_cli.media.image import load_image, load_reference
from midas_cli.media.pose import POSE_FIELDS, load_pose, pose_to_json
from midas_cli.media.prompts import Prompt, load_prompts, prompt_at, prompts_from_text
from midas_cli.media.video_in import probe_video, read_frames
from midas_cli.media.video_out import VideoWriter, write_video


def _tone(rate, seconds=0.5, freq=440.0, amp=0.5):
    t = np.arange(int(rate * seconds)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _peak_hz(audio, rate=SAMPLE_RATE):
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
    return np.fft.rfftfreq(len(audio), 1 / rate)[spectrum.argmax()]


def _wav(path, seconds=2.0, rate=SAMPLE_RATE):
    sf.write(path, _tone(rate, seconds), rate)
    return path


# ---- audio ---------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt, subtype, rate, channels", [
    ("wav", "PCM_U8", 8000, 1), ("wav", "PCM_16", 44100, 2), ("wav", "PCM_24", 16000, 1),
    ("wav", "PCM_32", 48000, 1), ("wav", "FLOAT", 22050, 2), ("wav", "DOUBLE", 11025, 1),
    ("flac", "PCM_16", 16000, 2), ("flac", "PCM_24", 32000, 2), ("ogg", "VORBIS", 44100, 1),
    ("mp3", "MPEG_LAYER_III", 44100, 2), ("mp3", "MPEG_LAYER_III", 22050, 1),
])
def test_audio_formats_load_as_16k_mono_with_the_right_length_and_pitch(tmp_path, fmt, subtype, rate, channels):
    x = _tone(rate)
    data = np.stack([x] * channels, 1) if channels > 1 else x
    path = tmp_path / f"a.{fmt}"
    sf.write(path, data, rate, subtype=subtype, format=fmt.upper())
    audio = load_audio(path)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert abs(len(audio) / SAMPLE_RATE - 0.5) < (0.06 if fmt == "mp3" else 0.002)  # mp3 adds encoder padding
    assert 0.4 < np.abs(audio).max() <= 1.0
    assert abs(_peak_hz(audio) - 440) < 5  # resampled, not just relabelled


def test_stereo_is_averaged_to_mono(tmp_path):
    x = _tone(16000)
    sf.write(tmp_path / "s.wav", np.stack([x, np.zeros_like(x)], 1), 16000)
    assert abs(np.abs(load_audio(tmp_path / "s.wav")).max() - 0.25) < 0.01


def test_formats_libsndfile_cannot_read_go_through_ffmpeg(tmp_path):
    wav = _wav(tmp_path / "a.wav", 1.0)
    m4a = tmp_path / "a.m4a"
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-v", "error", "-i", str(wav), "-c:a", "aac",
                    str(m4a)], check=True)
    audio = load_audio(m4a)
    assert abs(len(audio) / SAMPLE_RATE - 1.0) < 0.1 and abs(_peak_hz(audio) - 440) < 5


def test_silence_is_valid_audio_and_wav_round_trips(tmp_path):
    sf.write(tmp_path / "quiet.wav", np.zeros(8000, np.float32), 16000)
    assert not load_audio(tmp_path / "quiet.wav").any()
    x = _tone(16000, 0.25)
    write_wav(tmp_path / "out.wav", x)
    info = sf.info(str(tmp_path / "out.wav"))
    assert (info.samplerate, info.channels, info.subtype, info.frames) == (16000, 1, "PCM_16", 4000)
    np.testing.assert_allclose(load_audio(tmp_path / "out.wav"), x, atol=1e-4)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.wav", "quiet.wav"]  # no temp file left


# ---- images --------------------------------------------------------------------------------

def _save_mode(path, mode):
    base = Image.new("RGB", (40, 30), (200, 100, 50))
    if mode == "P+transparency":
        img = Image.new("P", base.size, 0)
        img.putpalette([200, 100, 50, 0, 0, 0])
        img.save(path, transparency=0)  # every pixel is palette entry 0, which is transparent
        return
    if mode == "I;16":
        Image.fromarray(np.full((30, 40), 40000, np.uint16)).save(path)
        return
    base.convert(mode).save(path)


@pytest.mark.parametrize("mode, suffix, colour", [
    ("RGB", "png", (200, 100, 50)), ("RGB", "webp", (200, 100, 50)), ("RGBA", "png", (200, 100, 50)),
    ("L", "png", None), ("LA", "png", None), ("1", "png", None), ("P", "png", None), ("CMYK", "jpg", (200, 100, 50)),
    ("P+transparency", "png", (255, 255, 255)), ("I;16", "png", (156, 156, 156)),
])
def test_images_of_any_mode_become_rgb(tmp_path, mode, suffix, colour):
    path = tmp_path / f"a.{suffix}"
    _save_mode(path, mode)
    out = load_reference(path, 32, 24)
    assert out.shape == (24, 32, 3) and out.dtype == np.uint8
    if colour is not None:
        assert np.abs(out.reshape(-1, 3).mean(0) - colour).max() < 6, out[0, 0]


def test_transparent_pixels_are_composited_on_white(tmp_path):
    rgba = np.zeros((20, 20, 4), np.uint8)
    rgba[:, 10:] = (0, 0, 255, 255)  # right half opaque blue, left half fully transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "cut.png")
    out = load_image(tmp_path / "cut.png")
    assert (out[:, :8] == 255).all() and (out[:, 12:] == (0, 0, 255)).all()


@pytest.mark.parametrize("size, target", [((300, 100), (64, 64)), ((90, 301), (64, 64)), ((301, 199), (40, 64))])
def test_fitting_keeps_circles_round(tmp_path, size, target):
    img = Image.new("RGB", size, "white")
    cx, cy, r = size[0] / 2, size[1] / 2, min(size) * 0.3
    ImageDraw.Draw(img).ellipse((cx - r, cy - r, cx + r, cy + r), fill="black")
    img.save(tmp_path / "shape.png")
    out = load_reference(tmp_path / "shape.png", *target)
    assert out.shape == (target[1], target[0], 3)
    rows, cols = np.where(out.mean(-1) < 128)
    height, width = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
    assert abs(height - width) <= 1, (height, width)  # not stretched
    assert abs(rows.mean() - (target[1] - 1) / 2) < 1 and abs(cols.mean() - (target[0] - 1) / 2) < 1  # centred


def test_exif_orientation_is_applied(tmp_path):
    img = Image.new("RGB", (40, 20), (255, 0, 0))
    img.paste((0, 0, 255), (20, 0, 40, 20))  # stored: red left, blue right
    exif = img.getexif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    img.save(tmp_path / "phone.jpg", exif=exif, quality=95)
    out = load_image(tmp_path / "phone.jpg")
    assert out.shape == (40, 20, 3)  # upright: tall
    assert out[5, 10, 0] > 200 and out[35, 10, 2] > 200  # red on top, blue at the bottom


def test_pixel_limit_is_checked_before_decoding(tmp_path, monkeypatch):
    Image.new("RGB", (100, 100)).save(tmp_path / "big.png")
    monkeypatch.setattr(image_mod, "MAX_PIXELS", 5000)
    with pytest.raises(MidasError, match=r"big\.png: image too large \(100×100"):
        load_reference(tmp_path / "big.png", 16, 16)


# ---- pose and prompts ----------------------------------------------------------------------

def test_pose_keyframes_interpolate_and_hold(tmp_path):
    path = tmp_path / "pose.json"
    path.write_text(json.dumps({"version": 1, "keyframes": [{"t": 0.08, "yaw": 10}, {"t": 0.24, "yaw": 30, "x": 0.1}]}))
    pose = load_pose(path, 5, fps=12.5, duration=0.4)
    assert pose.shape == (5, len(POSE_FIELDS)) and pose.dtype == np.float32
    np.testing.assert_allclose(pose[:, 0], [10, 10, 20, 30, 30], atol=1e-4)  # held, interpolated, held
    np.testing.assert_allclose(pose[:, 3], [0, 0, 0.05, 0.1, 0.1], atol=1e-5)
    assert not pose[:, [1, 2, 4, 5]].any()  # missing fields are 0
    np.testing.assert_allclose(load_pose(path, 5, fps=25)[:, 0], [10, 10, 10, 15, 20], atol=1e-4)
    again = tmp_path / "again.json"
    again.write_text(json.dumps(pose_to_json(pose)))
    np.testing.assert_allclose(load_pose(again, 5), pose, atol=1e-5)


def test_prompt_timeline(tmp_path):
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"prompts": [{"t": 1.0, "text": " smile "}, {"t": 2.0, "text": "frown"}]}))
    prompts = load_prompts(path, duration=3.0)
    assert prompts == [Prompt(1.0, "smile"), Prompt(2.0, "frown")]
    times = (0.0, 0.5, 1.0, 1.9, 2.0, 99)
    assert [prompt_at(prompts, t) for t in times] == ["", "", "smile", "smile", "frown", "frown"]
    assert prompt_at([], 1.0) == ""
    assert prompts_from_text("  calm  ") == [Prompt(0.0, "calm")]
    with pytest.raises(MidasError, match="--prompt: the prompt is empty"):
        prompts_from_text("   ")


# ---- video out -----------------------------------------------------------------------------

def test_video_writer_output_plays_anywhere(tmp_path):
    wav = _wav(tmp_path / "a.wav", 2.0)
    frames = [np.full((49, 65, 3), i * 10, np.uint8) for i in range(25)]  # odd size, 2.0 s at 12.5 fps
    out = tmp_path / "v.mp4"
    assert write_video(out, iter(frames), fps=12.5, audio_path=wav) == 25
    info = probe_video(out)
    assert (info.video_codec, info.audio_codec, info.pix_fmt) == ("h264", "aac", "yuv420p")
    assert (info.width, info.height) == (66, 50)  # padded to even
    assert abs(info.n_frames - 25) <= 1 and abs(info.fps - 12.5) < 1e-6
    assert abs(info.duration - 2.0) < 0.1 and abs(info.audio_duration - 2.0) < 0.1
    data = out.read_bytes()
    assert data.index(b"moov") < data.index(b"mdat")  # +faststart
    back = list(read_frames(out))
    assert len(back) == info.n_frames and abs(int(back[10][:49, :65].mean()) - 100) <= 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.wav", "v.mp4"]


def test_fractional_fps_and_shorter_audio(tmp_path):
    wav = _wav(tmp_path / "a.wav", 1.2)
    out = tmp_path / "v.mp4"
    with VideoWriter(out, 32, 32, fps="25/2", audio_path=wav) as w:
        for i in range(25):
            w.write(np.full((32, 32, 3), i, np.uint8))
    assert w.frames_written == 25
    info = probe_video(out)
    assert info.fps == 12.5 and abs(info.duration - 1.2) < 0.15  # -shortest: cut to the audio


@pytest.mark.parametrize("error", [RuntimeError("boom"), KeyboardInterrupt()])
def test_a_failing_render_leaves_no_file_and_keeps_the_old_one(tmp_path, error):
    out = tmp_path / "v.mp4"
    out.write_bytes(b"old")
    with pytest.raises(type(error)):
        with VideoWriter(out, 32, 32) as w:
            proc = w._proc
            for _ in range(3):
                w.write(np.zeros((32, 32, 3), np.uint8))
            raise error
    assert proc.poll() is not None  # ffmpeg is gone
    assert out.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["v.mp4"]


def test_ffmpeg_failure_is_a_one_line_error_with_its_message(tmp_path):
    bad_audio = tmp_path / "talk.wav"
    bad_audio.write_text("not audio")
    out = tmp_path / "v.mp4"
    with pytest.raises(MidasError) as e:
        with VideoWriter(out, 32, 32, audio_path=bad_audio) as w:
            for _ in range(30):
                w.write(np.zeros((32, 32, 3), np.uint8))
    msg = str(e.value)
    assert "v.mp4" in msg and "ffmpeg" in msg and "Invalid data" in msg and "\n" not in msg
    assert sorted(p.name for p in tmp_path.iterdir()) == ["talk.wav"]


def test_writer_refuses_bad_frames_and_targets(tmp_path):
    with VideoWriter(tmp_path / "v.mp4", 16, 16) as w:
        with pytest.raises(ValueError, match="expected"):
            w.write(np.zeros((8, 16, 3), np.uint8))
        with pytest.raises(TypeError, match="uint8"):
            w.write(np.zeros((16, 16, 3), np.float32))
        w.write(np.zeros((16, 16, 3), np.uint8))
    with pytest.raises(MidasError, match=r"v\.mkv: only \.mp4"):
        VideoWriter(tmp_path / "v.mkv", 16, 16)
    with pytest.raises(MidasError, match="does not exist"):
        VideoWriter(tmp_path / "nope" / "v.mp4", 16, 16).open()
    with pytest.raises(MidasError, match="no frames"):
        with VideoWriter(tmp_path / "empty.mp4", 16, 16):
            pass
    assert not (tmp_path / "empty.mp4").exists()


def test_png_folder_output_replaces_only_its_own_frames(tmp_path):
    out = tmp_path / "frames"
    for n in (3, 2):  # a second run replaces the first one's frames
        with VideoWriter(out, 16, 8) as w:
            for i in range(n):
                w.write(np.full((8, 16, 3), 50 * i, np.uint8))
        assert sorted(p.name for p in out.iterdir()) == [f"{i:06d}.png" for i in range(n)]
    assert [f[0, 0, 0] for f in read_frames(out)] == [0, 50]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frames"]
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    with pytest.raises(MidasError, match="holds other files"):
        VideoWriter(mine, 16, 8).open()
    assert (mine / "notes.txt").read_text() == "keep"


# ---- video in ------------------------------------------------------------------------------

def test_read_frames_from_video_resamples_and_fits(tmp_path):
    out = tmp_path / "v.mp4"
    write_video(out, [np.full((48, 64, 3), 20 * i, np.uint8) for i in range(6)])
    frames = list(read_frames(out, width=32, height=32))
    assert len(frames) == 6 and frames[0].shape == (32, 32, 3) and frames[0].dtype == np.uint8
    assert len(list(read_frames(out, fps=25))) == 12


def test_read_frames_from_images_in_natural_order(tmp_path):
    for i in (10, 2, 1):
        Image.new("RGB", (30, 20), (i, 0, 0)).save(tmp_path / f"f{i}.png")
    (tmp_path / ".hidden.png").write_bytes(b"junk")
    assert [int(f[0, 0, 0]) for f in read_frames(tmp_path)] == [1, 2, 10]
    assert list(read_frames(tmp_path / "f2.png", 8, 8))[0].shape == (8, 8, 3)


# ---- bad inputs: one line naming the file and the problem ----------------------------------

def _png_bytes(size=(64, 64)):
    import io

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (*size[::-1], 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def _bomb_png():
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)  # claims 100k × 100k RGB
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


def _zero_length_wav(path):
    sf.write(path, np.zeros(0, np.float32), 16000)


def _nan_wav(path):
    sf.write(path, np.array([0.0, np.nan, 0.1], np.float32), 16000, subtype="FLOAT")


def _folder(path):
    path.mkdir()


def _pose(obj):
    return json.dumps(obj) if not isinstance(obj, str) else obj


AUDIO = lambda p: load_audio(p)  # noqa: E731
IMAGE = lambda p: load_reference(p, 32, 32)  # noqa: E731
POSE = lambda p: load_pose(p, 25, duration=2.0)  # noqa: E731
PROMPTS = lambda p: load_prompts(p, duration=2.0)  # noqa: E731
VIDEO = lambda p: read_frames(p)  # noqa: E731
PROBE = lambda p: probe_video(p)  # noqa: E731

BAD_INPUTS = [  # id, file name, content (bytes, str, callable(path) or None = absent), reader, words in message
    ("audio-missing", "talk.wav", None, AUDIO, ["no such file"]),
    ("audio-folder", "talk.wav", _folder, AUDIO, ["folder"]),
    ("audio-empty", "talk.wav", b"", AUDIO, ["empty"]),
    ("audio-text", "talk.wav", "hello, this is not audio", AUDIO, ["not an audio file", "soundfile"]),
    ("audio-zero-length", "talk.wav", _zero_length_wav, AUDIO, ["no samples"]),
    ("audio-nan", "talk.wav", _nan_wav, AUDIO, ["NaN"]),
    ("image-missing", "face.png", None, IMAGE, ["no such file"]),
    ("image-empty", "face.png", b"", IMAGE, ["empty"]),
    ("image-text", "face.png", "not an image", IMAGE, ["not an image"]),
    ("image-truncated", "face.png", _png_bytes()[:2000], IMAGE, ["truncated"]),
    ("image-bomb", "face.png", _bomb_png(), IMAGE, ["too large"]),
    ("pose-malformed", "head.json", "{nope", POSE, ["malformed JSON", "line 1"]),
    ("pose-empty-file", "head.json", b"", POSE, ["empty"]),
    ("pose-not-utf8", "head.json", b"\xff\xfe\x00\x81", POSE, ["not a text file"]),
    ("pose-wrong-type", "head.json", _pose({"keyframes": [{"t": "zero", "yaw": 1}]}), POSE,
     ["keyframes[0].t", "not of type 'number'"]),
    ("pose-backwards", "head.json", _pose({"keyframes": [{"t": 0.0}, {"t": 1.0}, {"t": 2.0}, {"t": 1.5}]}), POSE,
     ["keyframes[3].t", "times must increase (1.5 after 2)"]),
    ("pose-out-of-range", "head.json", _pose({"keyframes": [{"t": 0}, {"t": 1, "yaw": 400}]}), POSE,
     ["keyframes[1].yaw", "400 is out of range [-90, 90]"]),
    ("pose-negative-time", "head.json", _pose({"keyframes": [{"t": -1}]}), POSE, ["keyframes[0].t", "minimum"]),
    ("pose-unknown-field", "head.json", _pose({"keyframes": [{"t": 0, "yw": 3}]}), POSE, ["keyframes[0]", "'yw'"]),
    ("pose-nan", "head.json", '{"keyframes": [{"t": 0, "yaw": NaN}]}', POSE, ["NaN"]),
    ("pose-huge-number", "head.json", '{"keyframes": [{"t": 1e999}]}', POSE, ["out of range"]),
    ("pose-no-keyframes", "head.json", _pose({"keyframes": []}), POSE, ["keyframes", "must not be empty"]),
    ("pose-after-clip", "head.json", _pose({"keyframes": [{"t": 0}, {"t": 9}]}), POSE,
     ["keyframes[1].t", "after the end of the clip"]),
    ("pose-version", "head.json", _pose({"version": 2, "keyframes": [{"t": 0}]}), POSE, ["version", "not supported"]),
    ("prompts-outside-clip", "mood.json", _pose({"prompts": [{"t": 0, "text": "a"}, {"t": 50, "text": "b"}]}),
     PROMPTS, ["prompts[1].t", "after the end"]),
    ("prompts-empty-text", "mood.json", _pose({"prompts": [{"t": 0, "text": ""}]}), PROMPTS,
     ["prompts[0].text", "empty"]),
    ("prompts-blank-text", "mood.json", _pose({"prompts": [{"t": 0, "text": "  \n"}]}), PROMPTS,
     ["prompts[0].text", "blank"]),
    ("prompts-not-object", "mood.json", _pose(list(range(1000))), PROMPTS, ["(top level)", "not of type 'object'"]),
    ("prompts-missing-text", "mood.json", _pose({"prompts": [{"t": 0}]}), PROMPTS,
     ["prompts[0]", "'text' is a required property"]),
    ("video-missing", "clip.mp4", None, VIDEO, ["no such file"]),
    ("video-empty", "clip.mp4", b"", VIDEO, ["empty"]),
    ("video-text", "clip.mp4", "hello", VIDEO, ["not a readable video"]),
    ("probe-text", "clip.mp4", "hello", PROBE, ["not a video file"]),
    ("probe-audio-only", "clip.wav", lambda p: _wav(p, 0.2), PROBE, ["no video stream"]),
    ("frames-folder-without-images", "frames", _folder, VIDEO, ["no images"]),
]


@pytest.mark.parametrize("name, content, reader, words", [c[1:] for c in BAD_INPUTS], ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_is_one_line_naming_the_file_and_the_problem(tmp_path, name, content, reader, words):
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif isinstance(content, str):
        path.write_text(content)
    elif content is not None:
        content(path)
    with pytest.raises(MidasError) as e:
        reader(path)
    msg = str(e.value)
    assert msg.startswith(f"{path}: ") and "\n" not in msg and len(msg) < 300, msg
    for word in words:
        assert word in msg, msg


def test_bad_input_corpus_is_large_enough():
    assert len(BAD_INPUTS) >= 12
