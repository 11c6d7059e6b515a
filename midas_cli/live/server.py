"""`midas serve`: one model, live sessions over a WebSocket, and the browser page.

`create_app(model, ...)` builds the FastAPI app (what tests drive); `serve(...)` loads a
checkpoint and runs it under uvicorn. Routes: `/` the page (package data in `static/`),
`/ws` a session (protocol in `protocol.py` and docs/live.md), `/health` a JSON status.

Queues, every one bounded: the socket's receive buffer (uvicorn's); a session's closed
chunks waiting for the worker (`LiveSession.max_pending`, oldest dropped); its generated
chunks waiting to be sent (`OUT_QUEUE`, oldest dropped). Drops are whole chunks, counted and
reported in every chunk header.
"""

from __future__ import annotations

import asyncio
import hmac
from contextlib import asynccontextmanager
import secrets
import time
from collections import deque
from dataclasses import dataclass, field
from importlib import resources

import numpy as np
from fastapi import FastAPI, WebSocket
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.websockets import WebSocketDisconnect, WebSocketState

from midas_cli.errors import MidasError
from midas_cli.live import protocol as P
from midas_cli.live.session import LiveSession
from midas_cli.live.worker import GenerationWorker

MAX_PENDING = 2  # closed chunks waiting for generation, per session (~1 s of audio)
OUT_QUEUE = 4  # generated chunks waiting for the socket, per session
HELLO_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 30.0


@dataclass
class ServerConfig:
    max_sessions: int = 1
    token: str | None = None
    seed: int = 0
    jpeg_quality: int = 85
    max_pending: int = MAX_PENDING
    out_queue: int = OUT_QUEUE


@dataclass(eq=False)
class _Outbox:
    """A session's generated chunks on their way to the socket (event-loop side, but `handed`).

    Every chunk the worker hands over (`handed`, counted on the worker thread before the hand-over
    is queued on the loop) ends sent, dropped or flushed; `settled()` says all of them have, which
    is what a stop waits for (the hand-over and the last send are both in flight for a moment after
    the worker is no longer busy).
    """

    size: int
    items: deque = field(default_factory=deque)
    event: asyncio.Event = field(default_factory=asyncio.Event)
    dropped: int = 0
    handed: int = 0
    sent: int = 0
    flushed: int = 0

    def put(self, item) -> None:
        if len(self.items) >= self.size:
            self.items.popleft()
            self.dropped += 1
        self.items.append(item)
        self.event.set()

    def flush(self) -> int:
        n = len(self.items)
        self.items.clear()
        self.flushed += n
        return n

    def settled(self) -> bool:
        return self.handed == self.sent + self.dropped + self.flushed


def default_reference(model) -> np.ndarray:
    """The synthetic world's first face at the model's size, when neither server nor client gives one."""
    from midas_cli.media.image import fit_array
    from midas_cli.synth.render import render_reference

    cfg = model.cfg.autoencoder
    return fit_array(render_reference(0), cfg.width, cfg.height)


def static_dir():
    return resources.files("midas_cli.live") / "static"


def create_app(model, ref: np.ndarray | None = None, config: ServerConfig | None = None):
    """The server for a loaded model; `ref` uint8 (H, W, 3) at the model's size (None: a synthetic face)."""
    cfg = config or ServerConfig()
    default_ref = ref if ref is not None else default_reference(model)
    worker = GenerationWorker()
    sessions: set[str] = set()
    totals = {"sessions_served": 0, "refused": 0}

    @asynccontextmanager
    async def lifespan(app):
        worker.start()
        yield
        worker.stop()

    app = FastAPI(title="midas serve", lifespan=lifespan)
    app.state.worker, app.state.sessions, app.state.totals = worker, sessions, totals

    @app.get("/", response_class=HTMLResponse)
    async def page():
        return (static_dir() / "index.html").read_text()

    @app.get("/static/{name}")
    async def static(name: str):
        files = {"app.js": "text/javascript", "capture-worklet.js": "text/javascript", "style.css": "text/css"}
        if name not in files:
            return JSONResponse({"error": "not found"}, status_code=404)
        return Response((static_dir() / name).read_text(), media_type=files[name])

    @app.get("/health")
    async def health():
        return {"status": "ok", "sessions": len(sessions), "max_sessions": cfg.max_sessions,
                "worker_alive": worker.alive, "width": model.cfg.autoencoder.width,
                "height": model.cfg.autoencoder.height, "fps": model.cfg.fps, **totals}

    async def fail(ws: WebSocket, message: str, code: int) -> None:
        """One error message naming the problem, then a clean close with the same reason."""
        try:
            await ws.send_json({"type": "error", "message": message})
            await ws.close(code, reason=message.encode()[:120].decode(errors="ignore"))
        except (WebSocketDisconnect, RuntimeError, OSError):
            pass  # the client is gone already

    async def receive_text_or_bytes(ws: WebSocket):
        msg = await ws.receive()
        if msg["type"] == "websocket.disconnect":
            raise WebSocketDisconnect(msg.get("code", 1000))
        return msg.get("text"), msg.get("bytes")

    @app.websocket("/ws")
    async def session_socket(ws: WebSocket):
        await ws.accept()
        if len(sessions) >= cfg.max_sessions:
            totals["refused"] += 1
            await fail(ws, f"server busy: {len(sessions)} of {cfg.max_sessions} sessions in use, try later",
                       P.CLOSE_TRY_LATER)
            return
        sid = secrets.token_hex(4)
        sessions.add(sid)
        loop = asyncio.get_running_loop()
        reg = sender = None
        try:
            try:
                text, data = await asyncio.wait_for(receive_text_or_bytes(ws), HELLO_TIMEOUT_S)
            except asyncio.TimeoutError:
                raise P.ProtocolError(f"no hello within {HELLO_TIMEOUT_S:g} s") from None
            if text is None:
                raise P.ProtocolError("the first message must be a JSON hello, not binary data")
            hello = P.parse_control(text)
            if hello["type"] != "hello":
                raise P.ProtocolError(f"the first message must be a hello, not {hello['type']!r}")
            if cfg.token is not None:
                given = hello.get("token") or ws.query_params.get("token") or ""
                if not isinstance(given, str) or not hmac.compare_digest(given.encode(), cfg.token.encode()):
                    raise P.ProtocolError("bad or missing token", P.CLOSE_POLICY)
            frame_samples = P.check_hello(hello)
            w, h = model.cfg.autoencoder.width, model.cfg.autoencoder.height
            ref_img = P.decode_ref(hello["ref"], w, h) if hello.get("ref") is not None else default_ref
            outbox = _Outbox(cfg.out_queue)
            ready = asyncio.Event()
            failure: list[BaseException] = []
            live = LiveSession(model, ref_img, prompt=P.prompt_text({"text": hello.get("prompt") or ""}),
                               seed=cfg.seed, max_pending=cfg.max_pending, on_closed=worker.wake)
            if hello.get("pose") is not None:
                live.set_pose(hello["pose"])
            quality = cfg.jpeg_quality

            def on_chunk(chunk):  # worker thread: JPEG-encode here, hand the pieces to the loop
                header = {"index": chunk.index, "speak_end": chunk.speak_end, "prompt": chunk.prompt,
                          "gen_ms": round(chunk.gen_s * 1000, 2),
                          "wait_ms": round((time.perf_counter() - chunk.closed_at - chunk.gen_s) * 1000, 2)}
                jpegs = [P.encode_jpeg(f, quality) for f in chunk.frames]
                outbox.handed += 1  # this thread's counter only; read by the loop
                loop.call_soon_threadsafe(outbox.put, (header, jpegs, P.float_to_pcm16(chunk.audio)))

            def on_error(e):
                failure.append(e)
                loop.call_soon_threadsafe(ready.set)
                loop.call_soon_threadsafe(outbox.event.set)

            reg = worker.add(live, lambda: loop.call_soon_threadsafe(ready.set), on_chunk, on_error)
            await ready.wait()
            if failure:
                raise failure[0]
            totals["sessions_served"] += 1
            await ws.send_json({"type": "ready", "session": sid, "width": w, "height": h, "fps": model.cfg.fps,
                                "frames_per_chunk": live.frames_per_chunk, "samples_per_chunk": live.samples_per_chunk,
                                "sample_rate": P.SAMPLE_RATE, "frame_samples": frame_samples})

            async def send_chunks():
                while True:
                    await outbox.event.wait()
                    outbox.event.clear()
                    if failure:
                        return
                    while outbox.items:
                        header, jpegs, pcm16 = outbox.items.popleft()
                        header.update(queue=live.pending + len(outbox.items), dropped=live.dropped + outbox.dropped)
                        await ws.send_bytes(P.pack_chunk(header, jpegs, pcm16))
                        outbox.sent += 1

            sender = asyncio.create_task(send_chunks())
            while True:
                if failure:
                    raise failure[0]
                if sender.done():
                    sender.result()  # a send failed: the client is gone
                    return
                text, data = await receive_text_or_bytes(ws)
                if data is not None:
                    kind, pcm = P.parse_audio(data, frame_samples)
                    (live.push_speak if kind == "speak" else live.push_listen)(pcm)
                    continue
                msg = P.parse_control(text)
                kind = msg["type"]
                if kind == "prompt":
                    live.set_prompt(P.prompt_text(msg))
                    await ws.send_json({"type": "prompt", "text": live.prompt, "from_chunk": live.chunks_closed})
                elif kind == "pose":
                    live.set_pose({k: v for k, v in msg.items() if k != "type"})
                elif kind == "interrupt":
                    waiting = live.interrupt() + outbox.flush()
                    await ws.send_json({"type": "interrupted", "flushed_chunks": waiting,
                                        "from_chunk": live.chunks_closed})
                elif kind == "hello":
                    raise P.ProtocolError("hello sent twice")
                elif kind == "stop":  # finish what has closed, then say goodbye
                    deadline = time.monotonic() + STOP_TIMEOUT_S
                    while (live.pending or reg.busy or not outbox.settled()) and time.monotonic() < deadline:
                        if failure or sender.done():
                            break
                        await asyncio.sleep(0.01)
                    await ws.send_json({"type": "bye", "chunks": live.chunks_closed,
                                        "dropped": live.dropped + outbox.dropped, "flushed": live.flushed})
                    await ws.close(P.CLOSE_NORMAL)
                    return
        except WebSocketDisconnect:
            pass
        except P.ProtocolError as e:
            await fail(ws, str(e), e.close_code)
        except MidasError as e:
            await fail(ws, str(e), P.CLOSE_INVALID)
        except Exception as e:  # a bug: this session ends, the server goes on
            await fail(ws, f"internal error ({type(e).__name__}: {e})", P.CLOSE_INTERNAL)
        finally:
            if reg is not None:
                worker.remove(reg)
            if sender is not None:
                sender.cancel()
                try:
                    await sender
                except (asyncio.CancelledError, Exception):
                    pass
            sessions.discard(sid)
            if ws.client_state == WebSocketState.CONNECTED and ws.application_state == WebSocketState.CONNECTED:
                try:
                    await ws.close(P.CLOSE_GOING_AWAY)
                except Exception:
                    pass

    return app


def serve(checkpoint: str | None = None, host: str = "127.0.0.1", port: int = 8000, max_sessions: int = 1,
          device: str = "auto", ref: str | None = None, token: str | None = None, log=print) -> None:
    """Load a checkpoint (None: the shipped demo) and serve it until Ctrl-C."""
    import uvicorn

    from midas_cli.devices import pick_device, pick_dtype
    from midas_cli.model.checkpoint import load_model
    from midas_cli.render import reference_for

    if max_sessions < 1:
        raise MidasError(f"--max-sessions {max_sessions}: must be at least 1")
    if not 0 < port < 65536:
        raise MidasError(f"--port {port}: expected 1..65535")
    dev = pick_device(device)
    model = load_model(checkpoint, device=dev, dtype=pick_dtype("auto", dev))
    ref_img = reference_for(model, ref, checkpoint) if ref is not None else None
    app = create_app(model, ref_img, ServerConfig(max_sessions=max_sessions, token=token))
    if host not in ("127.0.0.1", "localhost", "::1"):
        log(f"warning: listening on {host}: anyone who can reach this address can use the model"
            + ("" if token else " (no --token set)"))
    url_host = f"[{host}]" if ":" in host else host
    log(f"midas serve: http://{url_host}:{port}  (page at /, sessions at ws://{url_host}:{port}/ws; Ctrl-C stops)")
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", ws_max_size=P.MAX_MESSAGE_BYTES + 1024,
                            ws_ping_interval=20, timeout_graceful_shutdown=3, lifespan="on")
    server = uvicorn.Server(config)
    try:
        server.run()
    except OSError as e:
        raise MidasError(f"cannot listen on {host}:{port} ({e.strerror or e})") from None
