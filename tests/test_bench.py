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
