"""The generation worker: one thread runs the model for every live session.

A model is not safe to run from two threads at once, and on a CPU two threads would only
share the same cores, so every session's work goes through this one thread: first each new
session's prefill (the reference), then one chunk per session in turn (round-robin), so one
busy session cannot starve another. Sessions push audio from the server's event loop; the
worker sleeps on a condition variable until a chunk closes (`wake`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from midas_cli.live.session import LiveChunk, LiveSession


@dataclass(eq=False)
class Registration:
    session: LiveSession
    on_ready: Callable[[], None]  # the reference is prefilled
    on_chunk: Callable[[LiveChunk], None]  # runs on the worker thread
    on_error: Callable[[BaseException], None]
    active: bool = True
    busy: bool = False  # generating for this session right now


class GenerationWorker:
    def __init__(self, name: str = "midas-generate"):
        self._cond = threading.Condition()
        self._regs: list[Registration] = []
        self._turn = 0
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def add(self, session: LiveSession, on_ready, on_chunk, on_error) -> Registration:
        reg = Registration(session, on_ready, on_chunk, on_error)
        with self._cond:
            self._regs.append(reg)
            self._cond.notify_all()
        return reg

    def remove(self, reg: Registration) -> None:
        """Forget a session; a chunk it is generating right now is finished and thrown away."""
        with self._cond:
            reg.active = False
            if reg in self._regs:
                self._regs.remove(reg)

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def _next(self) -> Registration | None:  # under the lock
        for reg in self._regs:
            if not reg.session.started:
                return reg
        n = len(self._regs)
        for k in range(n):
            reg = self._regs[(self._turn + k) % n]
            if reg.session.pending:
                self._turn = (self._turn + k + 1) % n
                return reg
        return None

    def _run(self) -> None:
        while True:
            with self._cond:
                reg = self._next()
                while reg is None and not self._stopping:
                    self._cond.wait(timeout=1.0)
                    reg = self._next()
                if self._stopping:
                    return
                reg.busy = True
            try:
                if not reg.session.started:
                    reg.session.start()
                    if reg.active:
                        reg.on_ready()
                else:
                    chunk = reg.session.next_chunk()
                    if chunk is not None and reg.active:
                        reg.on_chunk(chunk)
            except BaseException as e:  # a failing session is reported to its client; the others go on
                self.remove(reg)
                try:
                    reg.on_error(e)
                except Exception:
                    pass
            finally:
                reg.busy = False
