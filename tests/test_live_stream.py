"""`midas stream` end to end against `midas serve` in a subprocess (the mp4 checked with ffmpeg),
a 100 MB message on a real socket, and Ctrl-C stopping the server."""

import json
import signal
import socket
import subprocess
import sys

import imageio_ffmpeg
import numpy as np
import pytest
import soundfile as sf

from live_helpers import PROMPTS, ServerThread, live_tiny_model
from midas_cli.live.client import wait_for_server

pytestmark = pytest.mark.slow


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from midas_cli.model.checkpoint import save_checkpoint

    ckpt = save_checkpoint(live_tiny_model(), tmp_path_factory.mktemp("ckpt") / "tiny")
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "midas_cli", "serve", "--checkpoint", str(ckpt), "--port", str(port),
                             "--device", "cpu"], stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    if not wait_for_server(url, timeout_s=30):
        proc.kill()
        pytest.fail(proc.stderr.read())
    yield url, proc
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def test_stream_writes_an_mp4_of_what_came_back_with_latency_figures(server, tmp_path):
    url, _ = server
    t = np.arange(int(16000 * 2.0)) / 16000
    sf.write(tmp_path / "talk.wav", (0.3 * np.sin(2 * np.pi * 200 * t)).astype(np.float32), 16000)
    sf.write(tmp_path / "other.wav", (0.1 * np.sin(2 * np.pi * 300 * t)).astype(np.float32), 16000)
    (tmp_path / "p.json").write_text(json.dumps({"version": 1, "prompts": [{"t": 0, "text": PROMPTS[0]},
                                                                          {"t": 1.0, "text": PROMPTS[2]}]}))
    out = tmp_path / "live.mp4"
    r = subprocess.run([sys.executable, "-m", "midas_cli", "stream", url, "--audio", str(tmp_path / "talk.wav"),
                        "--listen-audio", str(tmp_path / "other.wav"), "--prompts", str(tmp_path / "p.json"),
                        "--out", str(out), "--pace", "2", "--json"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert result["frames"] == 30 and result["dropped_chunks"] == 0  # 2 s → 5 chunks (the last padded)
    for key in ("first_frame_s", "latency_p50_ms", "latency_p95_ms"):
        assert result[key] > 0
    frames, secs = imageio_ffmpeg.count_frames_and_secs(str(out))
    assert frames == 30 and abs(secs - 2.4) < 0.1
    probe = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-i", str(out)],
                           capture_output=True, text=True).stderr
    assert "h264" in probe and "yuv420p" in probe and "aac" in probe
    assert not list(tmp_path.glob(".*partial*"))


def test_stream_errors_are_one_line_without_traceback(server, tmp_path):
    r = subprocess.run([sys.executable, "-m", "midas_cli", "stream", "http://127.0.0.1:9", "--audio",
                        str(tmp_path / "missing.wav"), "--out", str(tmp_path / "o.mp4")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "no such file" in r.stderr and "Traceback" not in r.stderr
    sf.write(tmp_path / "a.wav", np.zeros(8000, np.float32), 16000)
    r = subprocess.run([sys.executable, "-m", "midas_cli", "stream", f"http://127.0.0.1:{_free_port()}", "--audio",
                        str(tmp_path / "a.wav"), "--out", str(tmp_path / "o.mp4")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "cannot connect" in r.stderr and "Traceback" not in r.stderr


def test_a_100_mb_message_closes_that_session_with_a_reason_and_others_go_on():
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    with ServerThread(live_tiny_model()) as srv:
        ws_url = srv.url.replace("http", "ws") + "/ws"
        with connect(ws_url, max_size=None) as ws:
            ws.send(json.dumps({"type": "hello"}))
            assert json.loads(ws.recv(timeout=30))["type"] == "ready"
            with pytest.raises(ConnectionClosed) as e:
                ws.send(b"\x01" + bytes(100 * 2**20))
                ws.recv(timeout=30)
            assert e.value.rcvd.code == 1009 and "exceeds limit" in e.value.rcvd.reason
        with connect(ws_url) as ws:
            ws.send(json.dumps({"type": "hello"}))
            assert json.loads(ws.recv(timeout=30))["type"] == "ready"


def test_ctrl_c_stops_the_server_cleanly(server):
    url, proc = server
    proc.send_signal(signal.SIGINT)
    # uvicorn shuts down, then re-raises the signal: 130 is the shell's "ended by Ctrl-C"
    assert proc.wait(timeout=20) in (0, 130)
    assert "Traceback" not in proc.stderr.read()
