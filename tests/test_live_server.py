"""`midas serve`'s WebSocket protocol, driven in memory with Starlette's TestClient: frames come
back for audio sent, one message = 6 frames + their 7680 samples, prompt and interrupt, the
session limit, no leak over many connect/disconnect cycles, and every bad input."""

import base64
import gc
import io
import json
import threading
import time

import numpy as np
import pytest
from PIL import Image
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from live_helpers import live_tiny_model, speech
from midas_cli.live import protocol as P
from midas_cli.live.server import ServerConfig, create_app

S, F = 7680, 320


@pytest.fixture(scope="module")
def model():
    return live_tiny_model()


def _client(model, **cfg):
    return TestClient(create_app(model, config=ServerConfig(**cfg)))


def _hello(ws, **extra):
    ws.send_text(json.dumps({"type": "hello", "sample_rate": 16000, "frame_samples": F, **extra}))
    msg = ws.receive_json()
    assert msg["type"] == "ready", msg
    return msg


def _send_audio(ws, audio, tag=P.TAG_SPEAK):
    for i in range(0, len(audio), F):
        ws.send_bytes(P.audio_frame(tag, audio[i:i + F]))


def _receive_chunk(ws):
    while True:
        msg = ws.receive()
        if msg.get("bytes") is not None:
            return P.decode_chunk(msg["bytes"])
        text = json.loads(msg["text"])
        if text["type"] == "error":
            raise AssertionError(text)


def _frames(jpegs):
    return [np.asarray(Image.open(io.BytesIO(j))) for j in jpegs]


def _expect_error(ws, fragment):
    msg = ws.receive_json()
    assert msg["type"] == "error" and fragment in msg["message"], msg
    with pytest.raises(WebSocketDisconnect) as e:
        ws.receive_text()
    return e.value


def test_each_chunk_message_holds_six_frames_and_exactly_their_audio(model):
    audio = speech(3 * 0.48)
    with _client(model) as client, client.websocket_connect("/ws") as ws:
        ready = _hello(ws)
        assert ready["samples_per_chunk"] == S and ready["frames_per_chunk"] == 6
        _send_audio(ws, audio)
        for c in range(3):
            header, jpegs, pcm = _receive_chunk(ws)
            assert header["index"] == c and header["frames"] == 6 and len(jpegs) == 6
            assert header["speak_end"] == (c + 1) * S
            frames = _frames(jpegs)
            assert all(f.shape == (64, 64, 3) for f in frames)
            assert pcm.shape == (S,)
            sent = np.frombuffer(P.float_to_pcm16(audio[c * S:(c + 1) * S]), "<i2")
            np.testing.assert_array_equal(np.frombuffer(P.float_to_pcm16(pcm), "<i2"), sent)
        ws.send_text(json.dumps({"type": "stop"}))
        bye = ws.receive_json()
        assert bye["type"] == "bye" and bye["chunks"] == 3 and bye["dropped"] == 0


def test_prompt_change_takes_effect_at_the_next_chunk(model):
    audio = speech(3 * 0.48)

    def run(second):
        with _client(model) as client, client.websocket_connect("/ws") as ws:
            _hello(ws, prompt="calm")
            out = []
            for c in range(3):
                if c == 2:
                    ws.send_text(json.dumps({"type": "prompt", "text": second}))
                    ack = ws.receive_json()
                    assert ack == {"type": "prompt", "text": second, "from_chunk": 2}
                _send_audio(ws, audio[c * S:(c + 1) * S])
                out.append(_receive_chunk(ws))
            return out

    same, changed = run("calm"), run("she smiles warmly")
    assert [h["prompt"] for h, _, _ in changed] == ["calm", "calm", "she smiles warmly"]
    assert same[1][1] == changed[1][1]  # JPEG bytes of chunk 1: identical
    assert same[2][1] != changed[2][1]


def test_interrupt_flushes_and_the_session_goes_on(model):
    with _client(model) as client, client.websocket_connect("/ws") as ws:
        _hello(ws)
        _send_audio(ws, speech(0.48)[:S // 2])  # half a chunk, then interrupt
        ws.send_text(json.dumps({"type": "interrupt"}))
        msg = ws.receive_json()
        assert msg["type"] == "interrupted" and msg["from_chunk"] == 0
        _send_audio(ws, np.zeros(S, np.float32))  # it listens: silence makes a whole new chunk
        header, jpegs, pcm = _receive_chunk(ws)
        assert header["index"] == 0 and not pcm.any() and header["speak_end"] == S + S // 2


def test_extra_session_is_refused_with_a_close_reason(model):
    with _client(model, max_sessions=1) as client, client.websocket_connect("/ws") as first:
        _hello(first)
        with client.websocket_connect("/ws") as second:
            e = _expect_error(second, "server busy: 1 of 1 sessions")
            assert e.code == P.CLOSE_TRY_LATER and "server busy" in e.reason
        _send_audio(first, speech(0.48))  # the first session is unaffected
        assert _receive_chunk(first)[0]["index"] == 0


def test_token_is_required_when_set(model):
    with _client(model, token="s3cret") as client:
        with client.websocket_connect("/ws") as ws:
            ws.send_text(json.dumps({"type": "hello"}))
            assert _expect_error(ws, "bad or missing token").code == P.CLOSE_POLICY
        with client.websocket_connect("/ws?token=s3cret") as ws:
            _hello(ws)
        with client.websocket_connect("/ws") as ws:
            _hello(ws, token="s3cret")


def _bomb_png():
    buf = io.BytesIO()
    Image.new("L", (1, 1)).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    data[16:24] = (100_000).to_bytes(4, "big") * 2  # IHDR claims 100k × 100k pixels
    import zlib
    data[29:33] = zlib.crc32(bytes(data[12:29])).to_bytes(4, "big")
    return bytes(data)


BAD_INPUTS = {
    "malformed JSON": ([("text", "{not json")], "malformed JSON"),
    "unknown type": ([("hello", {}), ("text", json.dumps({"type": "dance"}))], "unknown message type 'dance'"),
    "wrong audio size": ([("hello", {}), ("bytes", b"\x01" + b"\x00" * 100)], "audio frame of wrong size: 101 bytes"),
    "unknown audio tag": ([("hello", {}), ("bytes", b"\x07" + b"\x00" * 640)], "unknown tag 0x07"),
    "audio before hello": ([("bytes", b"\x01" + b"\x00" * 640)], "first message must be a JSON hello"),
    "sample rate": ([("text", json.dumps({"type": "hello", "sample_rate": 44100}))], "sample_rate 44100"),
    "ref not an image": ([("text", json.dumps({"type": "hello", "ref": base64.b64encode(b"GIF89 nope" * 20).decode()}))],
                         "ref: not an image"),
    "ref bomb": ([("text", json.dumps({"type": "hello", "ref": base64.b64encode(_bomb_png()).decode()}))],
                 "ref: image too large"),
    "ref not base64": ([("text", json.dumps({"type": "hello", "ref": "%%%"}))], "ref: not valid base64"),
    "bad pose": ([("hello", {}), ("text", json.dumps({"type": "pose", "tilt": 4}))], "unknown field 'tilt'"),
    "too big": ([("hello", {}), ("bytes", b"\x01" + b"\x00" * (P.MAX_MESSAGE_BYTES + 2))], "message too big"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS), ids=list(BAD_INPUTS))
def test_bad_input_gets_one_error_and_the_server_goes_on(model, case):
    steps, fragment = BAD_INPUTS[case]
    with _client(model) as client:
        with client.websocket_connect("/ws") as ws:
            for kind, value in steps:
                if kind == "hello":
                    _hello(ws, **value)
                elif kind == "text":
                    ws.send_text(value)
                else:
                    ws.send_bytes(value)
            _expect_error(ws, fragment)
        assert client.get("/health").json()["sessions"] == 0
        with client.websocket_connect("/ws") as ws:  # the next client is served
            _hello(ws)
            _send_audio(ws, speech(0.48))
            assert _receive_chunk(ws)[0]["index"] == 0


def _rss():
    with open("/proc/self/statm") as f:
        import os
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_50_disconnects_mid_chunk_leave_no_thread_task_or_memory_behind(model):
    audio = speech(0.48 * 1.5)
    with _client(model) as client:
        def cycle():
            with client.websocket_connect("/ws") as ws:
                _hello(ws)
                _send_audio(ws, audio)  # one chunk closes (generation starts), half of the next waits
        for _ in range(5):
            cycle()
        gc.collect()
        threads, rss, tasks = threading.active_count(), _rss(), client.portal.call(_live_tasks)
        for _ in range(50):
            cycle()
        for _ in range(100):  # the server side of the last session may still be closing
            health = client.get("/health").json()
            if health["sessions"] == 0:
                break
            time.sleep(0.02)
        gc.collect()
        assert health["sessions"] == 0 and health["worker_alive"]
        assert threading.active_count() <= threads
        assert _rss() - rss < 40 * 2**20
        app = client.app
        assert not app.state.worker._regs  # every session unregistered from the worker
        assert client.portal.call(_live_tasks) <= tasks  # no session's sender task left running


async def _live_tasks():
    import asyncio

    return len([t for t in asyncio.all_tasks() if not t.done()])


def test_page_and_health_are_served(model):
    with _client(model) as client:
        page = client.get("/")
        assert page.status_code == 200 and "midas live" in page.text.lower()
        assert client.get("/static/app.js").status_code == 200
        assert client.get("/static/../server.py").status_code == 404
        assert client.get("/health").json()["max_sessions"] == 1
