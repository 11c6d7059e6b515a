"""Training metrics: OUTPUT/metrics.jsonl lines, resume without repeats, TensorBoard when installed."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch

from midas_cli.training.metrics import IntervalMeter, MetricsLogger, read_metrics

HAS_TENSORBOARD = importlib.util.find_spec("tensorboard") is not None


def _run(out, phases, resume=None, **kw):
    """Log `phases` = [(phase, steps)] at every step, as a training run would."""
    with MetricsLogger(out, resume=resume, tensorboard=False, **kw) as m:
        for phase, steps in phases:
            for step in steps:
                m.log(phase, step, loss=1.0 / step, lr=torch.tensor(1e-3))


def test_each_log_is_one_flushed_json_line_with_its_fields(tmp_path):
    m = MetricsLogger(tmp_path, tensorboard=False)
    meter = IntervalMeter()
    with meter.waiting():
        pass
    meter.count(sequences=8, tokens=8 * 100)
    m.log("model", 25, loss=torch.tensor(0.5), lr=5e-4, **meter.read())
    m.log("model", 50, loss=float("nan"), lr=4e-4, **meter.read())
    # read before close: every line is on disk as soon as it is logged
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    first, second = map(json.loads, lines)
    assert first["phase"] == "model" and first["step"] == 25 and first["loss"] == 0.5 and first["lr"] == 5e-4
    assert {"time", "sequences_per_s", "tokens_per_s", "data_wait_s", "data_wait_share"} <= set(first)
    assert first["tokens_per_s"] == pytest.approx(100 * first["sequences_per_s"])
    assert 0 <= first["data_wait_share"] <= 1
    assert second["loss"] is None and "sequences_per_s" not in second  # NaN is not JSON; counts start over
    m.close()


def test_only_the_enabled_rank_writes(tmp_path):
    m = MetricsLogger(tmp_path, enabled=False)
    m.log("model", 1, loss=1.0)
    m.close()
    assert not (tmp_path / "metrics.jsonl").exists() and not (tmp_path / "tensorboard").exists()


def test_a_resumed_run_appends_without_repeating_steps(tmp_path):
    # the stopped run logged model steps 1..7 but last saved its state at step 5
    _run(tmp_path, [("autoencoder", [1, 2]), ("model", range(1, 8))])
    _run(tmp_path, [("model", range(6, 9)), ("finetune1", [1])], resume=("model", 5))
    assert [(r["phase"], r["step"]) for r in read_metrics(tmp_path)] == (
        [("autoencoder", 1), ("autoencoder", 2)] + [("model", s) for s in range(1, 9)] + [("finetune1", 1)])


def test_a_later_phase_the_stopped_run_began_is_dropped_on_resume(tmp_path):
    # state saved at the end of `model`; the stopped run had begun finetune1, which starts over
    _run(tmp_path, [("model", [1, 2]), ("finetune1", [1, 2])])
    with (tmp_path / "metrics.jsonl").open("a") as f:
        f.write('{"time": 1, "phase": "finetune1", "st')  # torn by the kill
    _run(tmp_path, [("finetune1", [1])], resume=("model", 2))
    assert [(r["phase"], r["step"]) for r in read_metrics(tmp_path)] == [("model", 1), ("model", 2), ("finetune1", 1)]


def test_a_run_from_scratch_starts_the_file_over(tmp_path):
    _run(tmp_path, [("model", [1, 2, 3])])
    _run(tmp_path, [("model", [1])])
    assert [r["step"] for r in read_metrics(tmp_path)] == [1]


def test_the_log_line_says_where_metrics_go(tmp_path):
    logs = []
    MetricsLogger(tmp_path, log=logs.append, tensorboard=False).close()
    assert logs == [f"metrics: {tmp_path / 'metrics.jsonl'}"]


@pytest.mark.skipif(not HAS_TENSORBOARD, reason="the tensorboard extra is not installed")
def test_scalars_are_mirrored_to_tensorboard_and_purged_on_resume(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logs = []
    with MetricsLogger(tmp_path, log=logs.append) as m:
        for step in (1, 2, 3):
            m.log("model", step, loss=float(step), lr=1e-3, note="text is not a scalar")
    assert "TensorBoard" in logs[0]
    with MetricsLogger(tmp_path, resume=("model", 2)) as m:
        m.log("model", 3, loss=30.0, lr=1e-3)
    events = EventAccumulator(str(tmp_path / "tensorboard" / "model"))
    events.Reload()
    assert set(events.Tags()["scalars"]) == {"loss", "lr"}
    assert [(e.step, e.value) for e in events.Scalars("loss")] == [(1, 1.0), (2, 2.0), (3, 30.0)]


def test_without_tensorboard_the_log_line_says_how_to_get_it(tmp_path, monkeypatch):
    import midas_cli.training.metrics as metrics

    monkeypatch.setattr(metrics, "_summary_writer_class", lambda: None)
    logs = []
    with MetricsLogger(tmp_path, log=logs.append) as m:
        m.log("model", 1, loss=1.0)
    assert 'pip install "midas-toolkit[tensorboard]"' in logs[0]
    assert not (tmp_path / "tensorboard").exists() and read_metrics(tmp_path)[0]["loss"] == 1.0
