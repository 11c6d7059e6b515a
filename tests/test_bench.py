"""`midas bench --json` runs the real streaming path and reports what it promises."""

import json

from typer.testing import CliRunner

from midas_cli.cli.app import app


def test_bench_json_has_the_promised_keys():
    r = CliRunner().invoke(app, ["bench", "--config", "tiny", "--seconds", "3", "--device", "cpu", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    for key in ("rtf", "first_chunk_s", "chunk_time_ratio", "rss_ratio", "stages"):
        assert key in out
    assert set(out["stages"]) == {"conditions", "backbone", "head", "decode", "mux"}
    assert out["random_weights"] is True and out["chunks"] == 7 and out["frames"] == 38
    assert 0 < out["first_chunk_s"] < out["wall_s"] and out["stages"]["mux"] > 0


def _tiny_render_inputs(seconds=2.0):
    import numpy as np
    import torch

    from midas_cli.model.checkpoint import build_model
    from midas_cli.model.config import preset
    from midas_cli.pipeline import RenderInputs, n_frames_for, synthetic_speech

    torch.manual_seed(0)
    model = build_model(preset("tiny"), load_pretrained=False).eval()
    n = n_frames_for(seconds)
    size = model.cfg.autoencoder.width
    inputs = RenderInputs(ref=np.random.default_rng(0).integers(0, 255, (size, size, 3), dtype=np.uint8),
                          audio=synthetic_speech(seconds), n_frames=n)
    return model, inputs


def test_pipelined_render_writes_the_same_frames_in_order():
    import numpy as np

    from midas_cli.pipeline import render

    model, inputs = _tiny_render_inputs()
    serial, piped = [], []
    s1 = render(model, inputs, serial.append, seed=3, pipeline=False)
    s2 = render(model, inputs, piped.append, seed=3, pipeline=True)
    assert len(serial) == len(piped) == inputs.n_frames == s2.frames
    np.testing.assert_array_equal(np.stack(serial), np.stack(piped))
    assert len(s1.chunk_times) == len(s2.chunk_times) == 5
    assert 0 < s2.first_chunk_s <= s2.wall_s and abs(sum(s2.chunk_times) - s2.wall_s) < 0.05 * s2.wall_s + 0.01


def test_a_failing_sink_stops_the_pipelined_render():
    import pytest

    from midas_cli.pipeline import render

    model, inputs = _tiny_render_inputs()
    written, chunks = [], []

    def sink(img):
        if len(written) == 8:
            raise OSError("disk full")
        written.append(img)

    with pytest.raises(OSError, match="disk full"):
        render(model, inputs, sink, on_chunk=lambda c, n: chunks.append(c))
    assert len(written) == 8 and chunks == [1]  # chunk 2 failed; no later chunk was reported
