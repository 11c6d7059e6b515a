"""A live session: audio in as it is spoken, 480 ms chunks of frames + their audio out.

The library's live API; `midas serve` runs one `LiveSession` per WebSocket client.

    session = LiveSession(model, ref)            # ref: uint8 (H, W, 3) at the model's size
    session.start()                              # prefill the reference (model thread)
    session.push_speak(pcm)                      # float32 16 kHz pieces of any length, as they arrive
    session.push_listen(pcm)                     # optional: the other side of the conversation
    session.set_prompt("she smiles")             # from the next chunk on
    while (chunk := session.next_chunk()) is not None:
        show(chunk.frames, chunk.audio)          # 6 frames and exactly their 7680 samples

or, for an iterator of events, `live_chunks(model, ref, events)`.

Timeline. The speak stream is the clock: chunk c closes when the speak samples
[c·7680, (c+1)·7680) have all arrived, so a client sends speak audio continuously (silence
while the avatar is quiet), as a microphone does. The listen stream rides on the same
timeline: a closing chunk takes the next 7680 listen samples, zeros where they have not come,
so a client sends each time slot's listen piece before its speak piece.

Causality. When a chunk closes, its conditions are frozen from what has arrived by then:
the audio up to its end (plus the history the audio encoder looks back on), the prompt and
the pose set so far. Nothing later can change it.

Falling behind. Closed chunks wait in a bounded queue (`max_pending`); when a new one closes
on a full queue the oldest is dropped whole (frames and audio never part) and counted in
`dropped`. The engine's KV cache then simply goes on from the next chunk generated.

`interrupt()` flushes the waiting chunks and the half-filled one; the avatar goes on with
whatever audio comes next (silence: it listens).

Threads: push_* / set_* / interrupt may be called from one thread while `next_chunk` runs
on another (the server's generation worker); the state they share is behind one lock, and
generation itself runs outside it.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from midas_cli.conditions.audio import HOP, N_FFT, SAMPLES_PER_FRAME
from midas_cli.conditions.pose import pose_features
from midas_cli.engine.streaming import StreamingEngine
from midas_cli.errors import MidasError
from midas_cli.media.pose import POSE_FIELDS
from midas_cli.model.autoencoder import tensor_to_images
from midas_cli.model.midas import MidasModel
from midas_cli.pipeline import TextFeatures, chunk_features, encode_reference, set_conv_layout


@dataclass
class LiveChunk:
    """One 480 ms chunk: its frames and exactly the speak audio they show."""

    index: int  # chunk number in the session's timeline (dropped chunks keep their numbers)
    frames: np.ndarray  # uint8 (F, H, W, 3)
    audio: np.ndarray  # float32 (F · 1280,), 16 kHz: the speak audio of these frames
    prompt: str  # the prompt it was conditioned on
    speak_end: int  # speak samples received in the session when it closed (its last sample + 1)
    closed_at: float  # time.perf_counter() when its last audio sample arrived
    gen_s: float  # conditions + backbone + head + decode


@dataclass
class _Closed:
    """A closed chunk's frozen inputs, waiting for generation."""

    index: int
    speak: np.ndarray  # context + this chunk
    listen: np.ndarray
    prompt: str
    pose: np.ndarray  # (F + 1, 6): the previous chunk's last pose, then this chunk's
    speak_end: int
    closed_at: float


def _as_pcm(pcm) -> np.ndarray:
    a = np.asarray(pcm, dtype=np.float32).reshape(-1)
    if not np.isfinite(a).all():
        raise MidasError("audio: NaN or infinite samples")
    return np.clip(a, -1.0, 1.0)


def pose_vector(pose) -> np.ndarray:
    """A pose as 6 floats (`POSE_FIELDS` order): a dict with some of those keys, or a sequence."""
    if isinstance(pose, dict):
        unknown = set(pose) - set(POSE_FIELDS)
        if unknown:
            raise MidasError(f"pose: unknown field {sorted(unknown)[0]!r} (known: {', '.join(POSE_FIELDS)})")
        values = [pose.get(k, 0.0) for k in POSE_FIELDS]
    else:
        values = list(pose)
    try:
        vec = np.array(values, dtype=np.float32)
    except (TypeError, ValueError):
        raise MidasError("pose: values must be numbers") from None
    if vec.shape != (len(POSE_FIELDS),) or not np.isfinite(vec).all():
        raise MidasError(f"pose: expected {len(POSE_FIELDS)} finite numbers ({', '.join(POSE_FIELDS)})")
    return vec


class LiveSession:
    def __init__(self, model: MidasModel, ref: np.ndarray, *, prompt: str = "", seed: int = 0,
                 steps: int | None = None, context_sigma: float | None = None, max_pending: int | None = None,
                 on_closed: Callable[[], None] | None = None):
        """model: a loaded MidasModel; ref: uint8 (H, W, 3) at the model's size.

        max_pending: closed chunks allowed to wait for generation (None: unbounded, nothing is
        dropped). on_closed: called (outside the lock) whenever a chunk closes, e.g. to wake a worker.
        """
        cfg = model.cfg
        if ref.shape != (cfg.autoencoder.height, cfg.autoencoder.width, 3) or ref.dtype != np.uint8:
            raise ValueError(f"ref must be uint8 {(cfg.autoencoder.height, cfg.autoencoder.width, 3)}, "
                             f"got {ref.dtype} {ref.shape}")
        self.model, self.ref = model, ref
        self.frames_per_chunk = cfg.frames_per_chunk
        self.samples_per_chunk = cfg.frames_per_chunk * SAMPLES_PER_FRAME
        # whole chunks of history the audio encoder looks back on (log-mel: 15 ms; Whisper: its window)
        need = getattr(model.audio_features, "window_samples", self.samples_per_chunk + N_FFT - HOP)
        self.context_chunks = max(1, math.ceil((need - self.samples_per_chunk) / self.samples_per_chunk))
        self.max_pending = max_pending
        self.on_closed = on_closed
        self.engine = StreamingEngine(model, context_sigma=context_sigma, steps=steps, seed=seed)
        self.texts = TextFeatures(model)
        self._lock = threading.Lock()
        ctx = self.context_chunks * self.samples_per_chunk
        self._speak_hist = np.zeros(ctx, np.float32)  # zeros before the start, as a clip is read
        self._listen_hist = np.zeros(ctx, np.float32)
        self._speak: list[np.ndarray] = []  # the open chunk's pieces
        self._speak_len = 0
        self._listen = np.zeros(0, np.float32)
        self._pending: deque[_Closed] = deque()
        self._prompt = prompt
        self._pose = np.zeros(len(POSE_FIELDS), np.float32)
        self._last_pose = np.zeros(len(POSE_FIELDS), np.float32)  # pose 0 is the reference's
        self.speak_received = 0
        self.chunks_closed = 0
        self.dropped = 0
        self.flushed = 0
        self.started = False

    # ---- input side (any thread) -------------------------------------------------------------
    def push_speak(self, pcm) -> int:
        """Append speak audio (float32 16 kHz mono, any length); returns how many chunks it closed."""
        pcm = _as_pcm(pcm)
        closed = 0
        with self._lock:
            self.speak_received += len(pcm)
            while len(pcm):
                take = min(len(pcm), self.samples_per_chunk - self._speak_len)
                self._speak.append(pcm[:take])
                self._speak_len += take
                pcm = pcm[take:]
                if self._speak_len == self.samples_per_chunk:
                    self._close_chunk(self.speak_received - len(pcm))
                    closed += 1
        if closed and self.on_closed is not None:
            self.on_closed()
        return closed

    def push_listen(self, pcm) -> None:
        """Append the other side's audio; it is read on the speak stream's timeline."""
        pcm = _as_pcm(pcm)
        with self._lock:
            self._listen = np.concatenate([self._listen, pcm])
            # a listen stream far ahead of the speak clock is cut (oldest first) at 16 chunks, 7.7 s
            cap = 16 * self.samples_per_chunk
            if len(self._listen) > cap:
                self._listen = self._listen[-cap:]

    def set_prompt(self, text: str) -> None:
        with self._lock:
            self._prompt = str(text).strip()

    def set_pose(self, pose) -> None:
        """Head pose for the coming chunks: a dict of `POSE_FIELDS` (degrees, offsets) or 6 numbers."""
        vec = pose_vector(pose)
        with self._lock:
            self._pose = vec

    def interrupt(self) -> int:
        """Drop the chunks waiting for generation and the half-filled one; returns how many waited."""
        with self._lock:
            n = len(self._pending)
            self._pending.clear()
            self.flushed += n
            self._speak, self._speak_len = [], 0
            self._listen = np.zeros(0, np.float32)
            return n

    @property
    def pending(self) -> int:
        return len(self._pending)

    @property
    def prompt(self) -> str:
        return self._prompt

    def _close_chunk(self, speak_end: int) -> None:  # under the lock
        s = self.samples_per_chunk
        chunk = np.concatenate(self._speak)
        self._speak, self._speak_len = [], 0
        listen = self._listen[:s]
        self._listen = self._listen[s:]
        if len(listen) < s:
            listen = np.pad(listen, (0, s - len(listen)))
        speak_win = np.concatenate([self._speak_hist, chunk])
        listen_win = np.concatenate([self._listen_hist, listen])
        self._speak_hist, self._listen_hist = speak_win[s:], listen_win[s:]
        pose = np.concatenate([self._last_pose[None], np.repeat(self._pose[None], self.frames_per_chunk, 0)])
        self._last_pose = self._pose.copy()
        self._pending.append(_Closed(self.chunks_closed, speak_win, listen_win, self._prompt, pose, speak_end,
                                     time.perf_counter()))
        self.chunks_closed += 1
        if self.max_pending is not None and len(self._pending) > self.max_pending:
            self._pending.popleft()  # the oldest: whoever waits longest is least worth showing late
            self.dropped += 1

    # ---- model side (one thread) ---------------------------------------------------------------
    def start(self) -> None:
        """Encode the reference and prefill the engine's cache with it (runs the model)."""
        set_conv_layout(self.model.autoencoder, torch.channels_last)
        self.engine.start(encode_reference(self.model, self.ref))
        self.started = True

    def next_chunk(self) -> LiveChunk | None:
        """Generate the oldest waiting chunk; None when none has closed yet."""
        if not self.started:
            self.start()
        with self._lock:
            if not self._pending:
                return None
            job = self._pending.popleft()
        t0 = time.perf_counter()
        model, f = self.model, self.frames_per_chunk
        feats = chunk_features(model, job.speak, job.listen, self.context_chunks * f,
                               pose_features(job.pose)[1:], self.texts(job.prompt))
        latents = self.engine.generate_chunk(feats)  # (1, F, N, C)
        with torch.no_grad():
            frames = tensor_to_images(model.autoencoder.decode(latents[0], model.cfg.latent_grid))
        return LiveChunk(index=job.index, frames=frames, audio=job.speak[-self.samples_per_chunk:].copy(),
                         prompt=job.prompt, speak_end=job.speak_end, closed_at=job.closed_at,
                         gen_s=time.perf_counter() - t0)


def live_chunks(model: MidasModel, ref: np.ndarray, events: Iterable[tuple], **session_kw) -> Iterator[LiveChunk]:
    """Drive a `LiveSession` from an iterator of events; yield each chunk as soon as it exists.

    Events are (kind, value) pairs: ("speak", pcm), ("listen", pcm), ("prompt", text),
    ("pose", dict or 6 numbers), ("interrupt", None). `events` may be live (a generator that
    blocks on a microphone): chunks are generated between events, in order. A last,
    half-filled chunk is not generated; pad the speak audio with silence to finish it.
    """
    session = LiveSession(model, ref, **session_kw)
    session.start()
    actions = {"speak": session.push_speak, "listen": session.push_listen, "prompt": session.set_prompt,
               "pose": session.set_pose, "interrupt": lambda _: session.interrupt()}
    for kind, value in events:
        if kind not in actions:
            raise MidasError(f"live event {kind!r}: expected one of {', '.join(actions)}")
        actions[kind](value)
        while (chunk := session.next_chunk()) is not None:
            yield chunk
