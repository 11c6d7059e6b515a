"""Training metrics as data: one JSON object a line in `OUTPUT/metrics.jsonl`, mirrored to TensorBoard.

The log lines a run prints are for people; this file is for plots and comparisons. Each line is
`{"time": unix seconds, "phase": "model", "step": 25, "loss": ..., "lr": ..., ...}`, written and
flushed as it happens, by rank 0 only. With the optional extra (`pip install
"midas-toolkit[tensorboard]"`) the same scalars go to `OUTPUT/tensorboard/PHASE/` (one TensorBoard
run per phase, since each phase counts its steps from 0).

Resume: the file always holds one run's history, without repeats. A resumed run passes the
(phase, step) it resumes from; lines written after that point by the run that was stopped (it
got further than its last saved state) are dropped, and TensorBoard purges the same steps. A run
that starts from scratch (resume=None) starts both over.

    metrics = MetricsLogger(out, enabled=rank == 0, resume=(state["phase"], state["step"]) if state else None, log=log)
    meter = IntervalMeter()
    ...
    with meter.waiting():
        batch = next(batches)
    ...
    meter.count(sequences=b, tokens=b * tokens_per_sequence)
    if step % log_every == 0:
        metrics.log(name, step, loss=smooth, lr=lr, **meter.read())
    ...
    metrics.close()
"""

from __future__ import annotations

import json
import math
import shutil
import time
from contextlib import contextmanager
from pathlib import Path

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"


class MetricsLogger:
    """Appends `{time, phase, step, **scalars}` lines to OUTPUT/metrics.jsonl (and TensorBoard)."""

    def __init__(self, out_dir: str | Path, enabled: bool = True, resume: tuple[str, int] | None = None,
                 log=None, tensorboard: bool = True):
        self.enabled = enabled
        self.path = Path(out_dir) / METRICS_FILE
        self.tb_dir = Path(out_dir) / TENSORBOARD_DIR
        self._file = None
        self._writers: dict = {}
        self._purge: dict[str, int] = {}  # phase → first step TensorBoard must forget
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume is None:
            self.path.unlink(missing_ok=True)
            shutil.rmtree(self.tb_dir, ignore_errors=True)
        else:
            self._purge = _truncate_after(self.path, *resume)
        self._file = self.path.open("a", encoding="utf-8")
        self._summary_writer = _summary_writer_class() if tensorboard else None
        if log is not None:
            tb = (f"; TensorBoard: {self.tb_dir}" if self._summary_writer is not None
                  else ' (pip install "midas-toolkit[tensorboard]" to mirror them to TensorBoard)' if tensorboard
                  else "")
            log(f"metrics: {self.path}{tb}")

    def log(self, phase: str, step: int, **scalars) -> None:
        if not self.enabled:
            return
        values = {k: _plain(v) for k, v in scalars.items()}
        record = {"time": round(time.time(), 3), "phase": phase, "step": int(step), **values}
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()  # a killed run keeps every line it logged
        if self._summary_writer is not None:
            writer = self._writer(phase)
            for key, value in values.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    writer.add_scalar(key, value, int(step))

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        for writer in self._writers.values():
            writer.close()
        self._writers = {}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _writer(self, phase: str):
        if phase not in self._writers:
            self._writers[phase] = self._summary_writer(str(self.tb_dir / phase), purge_step=self._purge.get(phase))
        return self._writers[phase]


class IntervalMeter:
    """Throughput and data wait since the last `read()`: what a log line reports about its interval."""

    def __init__(self):
        self._reset()

    def _reset(self) -> None:
        self._start = time.perf_counter()
        self._wait = 0.0
        self._counts: dict[str, float] = {}

    @contextmanager
    def waiting(self):
        """Time spent in here counts as waiting for data (the loader's `next`, a host-to-device copy)."""
        t = time.perf_counter()
        try:
            yield
        finally:
            self._wait += time.perf_counter() - t

    def count(self, **amounts: float) -> None:
        for key, n in amounts.items():
            self._counts[key] = self._counts.get(key, 0) + n

    def read(self) -> dict:
        """`{NAME_per_s..., data_wait_s, data_wait_share}` for the interval, and start the next one."""
        elapsed = max(time.perf_counter() - self._start, 1e-9)
        out = {f"{key}_per_s": n / elapsed for key, n in self._counts.items()}
        out["data_wait_s"] = self._wait
        out["data_wait_share"] = min(1.0, self._wait / elapsed)
        self._reset()
        return out


def read_metrics(out_dir: str | Path) -> list[dict]:
    """The records of OUTPUT/metrics.jsonl, in order (a torn last line, from a kill, is skipped)."""
    path = Path(out_dir) / METRICS_FILE
    return [r for r in map(_parse, path.read_text(encoding="utf-8").splitlines()) if r] if path.exists() else []


def _truncate_after(path: Path, phase: str, step: int) -> dict[str, int]:
    """Drop the lines past (phase, step); returns each cut phase's first dropped step.

    Lines are in time order, so the resume point is the first line of `phase` past `step`, or the
    first line of another phase after `phase` has appeared (a later phase the stopped run began).
    """
    if not path.exists():
        return {}
    lines = path.read_text(encoding="utf-8").splitlines()
    kept, purge, past, seen = [], {}, False, False
    for line in lines:
        record = _parse(line)
        if record is None:
            continue
        same = record["phase"] == phase
        past = past or (same and record["step"] > step) or (seen and not same)
        seen = seen or same
        if past:
            purge[record["phase"]] = min(purge.get(record["phase"], record["step"]), record["step"])
        else:
            kept.append(line)
    if len(kept) != len(lines):
        tmp = path.with_name(path.name + ".partial")
        tmp.write_text("".join(k + "\n" for k in kept), encoding="utf-8")
        tmp.replace(path)
    return purge


def _parse(line: str) -> dict | None:
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return record if isinstance(record, dict) and "phase" in record and "step" in record else None


def _plain(value):
    """A JSON value: tensors and numpy scalars as numbers, NaN/inf as null (JSON has neither)."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _summary_writer_class():
    """torch's SummaryWriter when the tensorboard package is installed and importable, else None."""
    import importlib.util

    if importlib.util.find_spec("tensorboard") is None:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except Exception:  # an installed but broken tensorboard (e.g. a protobuf clash) must not stop training
        return None
    return SummaryWriter
