"""`midas stream`: a scripted live client. Sends audio paced like a microphone, writes what
comes back to an mp4, and measures latency.

- Chunk latency: from the moment the chunk's last audio sample was sent to the moment its
  message (with its first frame) arrived. The server says which sample closed each chunk
  (`speak_end`), so the figure stays right across drops and interrupts.
- first_frame_s: from the first audio sample sent to the first frame received.
Audio is sent in 20 ms frames at `pace` × real time (1 = as spoken; tests go faster), the
speak stream padded with silence to a whole chunk. The mp4 holds each chunk's frames with
the audio that came in the same message; a dropped chunk is missing from both.
"""

from __future__ import annotations

import base64
import json
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import numpy as np

from midas_cli.errors import MidasError
from midas_cli.live import protocol as P


def ws_url(url: str, token: str | None = None) -> str:
    """http://host:port (what `midas serve` prints) → ws://host:port/ws."""
    parts = urlsplit(url if "://" in url else f"http://{url}")
    scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(parts.scheme)
    if scheme is None or not parts.netloc:
        raise MidasError(f"{url}: expected an address like http://127.0.0.1:8000")
    path = parts.path if parts.path.endswith("/ws") else parts.path.rstrip("/") + "/ws"
    return urlunsplit((scheme, parts.netloc, path, f"token={token}" if token else "", ""))


def wait_for_server(url: str, timeout_s: float = 30.0) -> bool:
    """True once a `midas serve` at `url` answers `/health` (one just started), False after `timeout_s`."""
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url.rstrip("/") + "/health", timeout=1).read()
            return True
        except OSError:
            time.sleep(0.1)
    return False


def _percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def stream(url: str, audio: str | Path, out: str | Path, *, listen_audio: str | Path | None = None,
           prompts: str | Path | None = None, ref: str | Path | None = None, token: str | None = None,
           pace: float = 1.0, frame_samples: int = P.DEFAULT_FRAME_SAMPLES, on_chunk=None) -> dict:
    """Run one session against a `midas serve` at `url`; write `out` (.mp4); return the figures."""
    from websockets.exceptions import ConnectionClosed, InvalidURI, WebSocketException
    from websockets.sync.client import connect

    from midas_cli.media.audio import load_audio, write_wav
    from midas_cli.media.prompts import load_prompts
    from midas_cli.media.video_out import VideoWriter

    out = Path(out)
    if out.suffix.lower() != ".mp4":
        raise MidasError(f"{out}: the output must be an .mp4 file")
    if not out.parent.is_dir():
        raise MidasError(f"{out}: folder {out.parent} does not exist")
    if pace <= 0:
        raise MidasError(f"--pace {pace}: must be positive")
    speak = load_audio(audio)
    listen = load_audio(listen_audio) if listen_audio is not None else None
    timeline = load_prompts(prompts) if prompts is not None else []
    hello = {"type": "hello", "sample_rate": P.SAMPLE_RATE, "frame_samples": frame_samples}
    if ref is not None:
        from midas_cli.media.files import check_input_file

        hello["ref"] = base64.b64encode(check_input_file(ref, "an image").read_bytes()).decode()
    if timeline and timeline[0].t <= 0:
        hello["prompt"] = timeline.pop(0).text

    try:
        ws = connect(ws_url(url, token), max_size=64 * 2**20, open_timeout=10, close_timeout=5)
    except (OSError, InvalidURI, WebSocketException, TimeoutError) as e:
        raise MidasError(f"{url}: cannot connect ({e})") from None
    with ws:
        ws.send(json.dumps(hello))
        ready = _expect_json(ws, "ready")
        spc = ready["samples_per_chunk"]
        n = -(-len(speak) // spc) * spc  # whole chunks: the last one padded with silence
        speak = np.pad(speak, (0, n - len(speak)))
        if listen is not None:
            listen = np.pad(listen, (0, max(0, n - len(listen))))[:n]
        sent_at: dict[int, float] = {}  # speak samples sent so far → when
        t_first: list[float] = []
        send_error: list[BaseException] = []

        def send():
            try:
                t0 = time.perf_counter()
                pending = list(timeline)
                for k, i in enumerate(range(0, n, frame_samples)):
                    due = t0 + i / P.SAMPLE_RATE / pace
                    delay = due - time.perf_counter()
                    if delay > 0:
                        time.sleep(delay)
                    while pending and pending[0].t <= i / P.SAMPLE_RATE + 1e-9:
                        ws.send(json.dumps({"type": "prompt", "text": pending.pop(0).text}))
                    if listen is not None:  # a time slot's listen frame goes before its speak frame
                        ws.send(P.audio_frame(P.TAG_LISTEN, listen[i:i + frame_samples]))
                    ws.send(P.audio_frame(P.TAG_SPEAK, speak[i:i + frame_samples]))
                    now = time.perf_counter()
                    if not t_first:
                        t_first.append(now)
                    sent_at[i + frame_samples] = now
                ws.send(json.dumps({"type": "stop"}))
            except ConnectionClosed:
                pass
            except BaseException as e:  # reported by the main thread
                send_error.append(e)

        sender = threading.Thread(target=send, name="midas-stream-send", daemon=True)
        sender.start()
        chunks, latencies, gen_ms = [], [], []
        first_frame_s, bye, dropped, error = None, None, 0, None
        try:
            for message in ws:
                now = time.perf_counter()
                if isinstance(message, str):
                    msg = json.loads(message)
                    if msg["type"] == "error":
                        error = msg["message"]
                        break
                    if msg["type"] == "bye":
                        bye = msg
                        break
                    continue
                header, jpegs, pcm = P.decode_chunk(message)
                if first_frame_s is None and t_first:
                    first_frame_s = now - t_first[0]
                # the frame that carried the chunk's last sample (speak_end falls mid-frame only after an interrupt)
                closed = sent_at.pop(-(-header["speak_end"] // frame_samples) * frame_samples, None)
                if closed is not None:
                    latencies.append((now - closed) * 1000)
                gen_ms.append(header["gen_ms"])
                dropped = header["dropped"]
                chunks.append((jpegs, pcm))
                if on_chunk is not None:
                    on_chunk(header, latencies[-1] if latencies else None)
        except ConnectionClosed as e:
            if bye is None and error is None:
                error = f"connection closed ({e.rcvd.code if e.rcvd else 'no close frame'}"
                error += f": {e.rcvd.reason})" if e.rcvd and e.rcvd.reason else ")"
        sender.join(timeout=5)
    if send_error:
        raise MidasError(f"{url}: sending failed ({send_error[0]})")
    if error is not None:
        raise MidasError(f"{url}: the server ended the session: {error}")
    if bye is not None:
        dropped = bye["dropped"]
    if not chunks:
        raise MidasError(f"{url}: no chunks came back")
    _write_mp4(out, chunks, ready, VideoWriter, write_wav)
    frames = sum(len(j) for j, _ in chunks)
    return {
        "out": str(out), "frames": frames, "chunks": len(chunks), "seconds": frames / ready["fps"],
        "first_frame_s": first_frame_s, "latency_last_ms": latencies[-1] if latencies else None,
        "latency_p50_ms": _percentile(latencies, 50), "latency_p95_ms": _percentile(latencies, 95),
        "latency_max_ms": max(latencies) if latencies else None,
        "gen_ms_p50": _percentile(gen_ms, 50), "dropped_chunks": dropped, "pace": pace,
    }


def _expect_json(ws, kind: str) -> dict:
    from websockets.exceptions import ConnectionClosed

    try:
        msg = json.loads(ws.recv(timeout=60))
    except ConnectionClosed as e:
        raise MidasError(f"the server closed the session ({e.rcvd.reason if e.rcvd else 'no reason'})") from None
    except TimeoutError:
        raise MidasError(f"no {kind!r} from the server within 60 s") from None
    if msg.get("type") == "error":
        raise MidasError(f"the server refused the session: {msg['message']}")
    if msg.get("type") != kind:
        raise MidasError(f"expected {kind!r} from the server, got {msg.get('type')!r}")
    return msg


def _write_mp4(out: Path, chunks, ready: dict, VideoWriter, write_wav) -> None:
    """Frames and audio of the chunks that came back, in one mp4 (temp file, renamed at the end)."""
    import io

    from PIL import Image

    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "audio.wav"
        write_wav(wav, np.concatenate([pcm for _, pcm in chunks]), P.SAMPLE_RATE)
        with VideoWriter(out, ready["width"], ready["height"], fps=ready["fps"], audio_path=wav) as writer:
            for jpegs, _ in chunks:
                for j in jpegs:
                    writer.write(np.asarray(Image.open(io.BytesIO(j)).convert("RGB")))
