"""The judge: metrics, shipped judges, baselines, and the eval command."""

from __future__ import annotations

import json

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from midas_cli.errors import MidasError
from midas_cli.evaluation import (evaluate, load_judge_recipe, load_judges, make_eval_cases,
                                  psnr_frames, ssim_frames, static_generator, truth_generator)
from midas_cli.evaluation.judges import WEIGHTS_DIR, n_params
from midas_cli.evaluation.metrics import PSNR_CAP, per_second
from midas_cli.synth import render_frame

REQUIRED = ("psnr_db", "ssim", "lip_sync_acc", "expression_acc", "pose_err", "listening_acc",
            "drift_db", "psnr_per_second", "cases", "seconds")


@pytest.fixture(scope="module")
def cases():
    return make_eval_cases(2, 10.0, seed=7, size=128)


@pytest.fixture(scope="module")
def truth_result(cases):
    return evaluate(truth_generator, cases, progress=False)


def test_psnr_and_ssim_basics():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    assert np.all(psnr_frames(a, a) == PSNR_CAP)
    assert np.allclose(ssim_frames(a, a), 1.0, atol=1e-5)
    noisy = np.clip(a + rng.normal(0, 8, a.shape), 0, 255).astype(np.uint8)
    assert 25 < psnr_frames(a, noisy).mean() < 35  # 20 log10(255 / 8) = 30 dB
    face = render_frame(3, 0, 0, None, 64)[None]
    assert ssim_frames(face, np.clip(face + rng.normal(0, 20, face.shape), 0, 255)
                       .astype(np.uint8)).mean() < 0.8
    assert len(per_second(np.ones(30))) == 3  # 30 frames at 12.5 fps span 3 seconds


def test_shipped_judges_are_small_and_documented():
    assert (WEIGHTS_DIR / "judges.safetensors").stat().st_size < 3_000_000
    judges = load_judges()
    for net in judges.nets().values():
        assert n_params(net) * 4 < 1_000_000
    assert judges.info["heldout_test_identities"]["mouth_acc"] >= 0.95
    assert load_judge_recipe().steps >= 1


def test_shipped_judges_tell_mouths_and_expressions_apart(cases):
    judges = load_judges()
    frames = np.concatenate([c.frames for c in cases])
    pred = judges.predict(frames)
    mouth = np.concatenate([c.mouth for c in cases])
    expression = np.concatenate([c.expression for c in cases])
    assert (pred["mouth"] == mouth).mean() >= 0.95
    assert (pred["expression"] == expression).mean() >= 0.95
    for k in range(4):  # every class is recognised, not just the common ones
        assert (pred["mouth"][mouth == k] == k).mean() >= 0.85


def test_truth_baseline_scores_perfect_pixels_and_no_drift(truth_result):
    r = truth_result
    assert all(k in r for k in REQUIRED)
    assert r["psnr_db"] == PSNR_CAP and r["ssim"] > 0.999 and abs(r["drift_db"]) < 1e-6
    assert r["lip_sync_acc"] >= 0.95 and r["expression_acc"] >= 0.95
    assert r["listening_acc"] >= 0.95 and r["pose_err"] < 4.0
    assert len(r["psnr_per_second"]) == 10 and r["cases"] == 2


def test_per_minute_scores_show_a_face_that_fails_after_a_minute(cases, truth_result):
    import dataclasses

    assert "per_minute" not in truth_result  # 10 s clips: one minute, nothing to break down
    reps = 13  # 10 s case tiled to 130 s: minutes 1, 2 and a 10 s third
    c = cases[0]
    tile = lambda a: np.concatenate([a] * reps)  # noqa: E731
    long = dataclasses.replace(
        c, audio=tile(c.audio), listen_audio=tile(c.listen_audio), pose=tile(c.pose),
        frames=tile(c.frames), mouth=tile(c.mouth), expression=tile(c.expression),
        listening=tile(c.listening), seconds=c.seconds * reps)

    def truth_then_still(case):  # right for a minute, then the reference photo held
        frames = case.frames.copy()
        frames[750:] = case.ref
        return frames

    r = evaluate(truth_then_still, [long], progress=False)
    m = r["per_minute"]
    assert [row["minute"] for row in m] == [1, 2, 3]
    assert m[0]["psnr_db"] == PSNR_CAP and m[1]["psnr_db"] < 30
    assert m[0]["lip_sync_balanced_acc"] >= 0.9 and m[1]["lip_sync_balanced_acc"] < 0.4
    assert m[0]["listening_frames"] == int(long.listening[:750].sum())
    assert sum(row["listening_frames"] for row in m) == int(long.listening.sum())


def test_static_baseline_lip_sync_is_much_lower(cases, truth_result):
    r = evaluate(static_generator, cases, progress=False)
    assert r["lip_sync_acc"] < truth_result["lip_sync_acc"] - 0.3
    assert r["lip_sync_balanced_acc"] < 0.35  # chance is 0.25
    assert r["psnr_db"] < 30 and r["listening_acc"] > 0.95


def test_generated_frames_may_be_one_frame_short_or_another_size(cases):
    import torch
    import torch.nn.functional as F

    def small(case):  # a 64x64 generator with one frame missing
        x = torch.from_numpy(case.frames[:-1]).permute(0, 3, 1, 2).float()
        x = F.interpolate(x, size=(64, 64), mode="bilinear", antialias=True)
        return x.round().byte().permute(0, 2, 3, 1).numpy()

    r = evaluate(small, cases[:1], progress=False)
    assert r["frames"] == cases[0].n_frames - 1
    assert r["lip_sync_acc"] > 0.8 and r["psnr_db"] > 22

    with pytest.raises(MidasError, match="frames"):
        evaluate(lambda c: c.frames[:-3], cases[:1], progress=False)


def test_judge_recipe_names_the_bad_field(tmp_path):
    bad = tmp_path / "j.yaml"
    bad.write_text("steps: 10\nmouth: {in_size: 64, kernel: 5}\n")
    with pytest.raises(MidasError, match="mouth.kernel"):
        load_judge_recipe(bad)
    bad.write_text("lr: fast\n")
    with pytest.raises(MidasError, match="lr"):
        load_judge_recipe(bad)


def test_eval_command_static_baseline_prints_one_json_object(capsys):
    from midas_cli.cli.eval_cmd import eval_cmd

    eval_cmd(baseline="static", json_out=True, cases=1, seconds=4.0)
    out = capsys.readouterr().out
    result = json.loads(out)
    assert all(k in result for k in REQUIRED)
    assert result["generator"] == "baseline:static" and result["cases"] == 1
    assert out.count("\n") == 1


def test_eval_command_options_through_typer():
    from midas_cli.cli.eval_cmd import eval_cmd

    app = typer.Typer()
    app.command("eval")(eval_cmd)
    app.command("noop")(lambda: None)
    res = CliRunner().invoke(app, ["eval", "--baseline", "truth", "--json", "--cases", "1",
                                   "--seconds", "2", "--size", "64"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["psnr_db"] == PSNR_CAP
    with pytest.raises(MidasError, match="--baseline"):
        eval_cmd(baseline="perfect", json_out=True, cases=1, seconds=1.0)
    with pytest.raises(MidasError, match="--checkpoint"):
        eval_cmd(baseline="static", checkpoint="x", json_out=True, cases=1, seconds=1.0)


def test_autoencoder_baseline_scores_the_checkpoints_reconstructions(capsys):
    """`--baseline autoencoder`: true frames through the shipped autoencoder; between the static
    frame and the truth on pixels, and the judges see roughly the true pose in it."""
    from midas_cli.cli.eval_cmd import eval_cmd

    eval_cmd(baseline="autoencoder", json_out=True, cases=1, seconds=2.0, device="cpu")
    result = json.loads(capsys.readouterr().out)
    assert result["generator"] == "baseline:autoencoder(demo)"
    static = evaluate(static_generator, make_eval_cases(1, 2.0), progress=False)
    assert static["psnr_db"] + 3 < result["psnr_db"] < PSNR_CAP
    assert result["pose_err"] < static["pose_err"]
    with pytest.raises(MidasError, match="'autoencoder'"):
        eval_cmd(baseline="perfect", json_out=True, cases=1, seconds=1.0)


def test_eval_head_steps_reach_the_render(tiny_model):
    """`midas eval --steps`: the head's Euler steps of the scored rollout (None: the checkpoint's)."""
    import torch

    from midas_cli.pipeline import model_generator

    with torch.no_grad():  # a head that moves its sample (a fresh one predicts velocity 0)
        torch.nn.init.normal_(tiny_model.head.final_layer.linear.weight, std=0.5, generator=torch.Generator().manual_seed(0))
    case = make_eval_cases(1, 1.0, 0, tiny_model.cfg.autoencoder.width)[0]
    default = model_generator(tiny_model, seed=3)(case)
    same = model_generator(tiny_model, seed=3, steps=tiny_model.cfg.head.steps)(case)
    one = model_generator(tiny_model, seed=3, steps=1)(case)
    assert np.array_equal(default, same)
    assert not np.array_equal(default, one)


def test_temperature_scales_the_heads_starting_noise(tiny_model):
    """`--temperature`: the checkpoint's head.temperature by default; 1 is the plain sample, another
    value changes it, and 0 starts every Euler path at the mean, so with clean context the rollout
    no longer depends on the seed."""
    import torch

    from midas_cli.pipeline import model_generator

    with torch.no_grad():  # a head that moves its sample (a fresh one predicts velocity 0)
        torch.nn.init.normal_(tiny_model.head.final_layer.linear.weight, std=0.5, generator=torch.Generator().manual_seed(0))
    case = make_eval_cases(1, 1.0, 0, tiny_model.cfg.autoencoder.width)[0]
    default = model_generator(tiny_model, seed=3)(case)
    assert np.array_equal(default, model_generator(tiny_model, seed=3, temperature=1.0)(case))
    cooler = model_generator(tiny_model, seed=3, temperature=0.4)(case)
    assert not np.array_equal(default, cooler)
    tiny_model.cfg.head.temperature = 0.4  # the checkpoint's default is what None picks
    assert np.array_equal(cooler, model_generator(tiny_model, seed=3)(case))
    a = model_generator(tiny_model, seed=3, temperature=0.0, context_sigma=0.0)(case)
    b = model_generator(tiny_model, seed=4, temperature=0.0, context_sigma=0.0)(case)
    assert np.array_equal(a, b)
    assert not np.array_equal(model_generator(tiny_model, seed=3, temperature=1.0, context_sigma=0.0)(case),
                              model_generator(tiny_model, seed=4, temperature=1.0, context_sigma=0.0)(case))


def test_eval_guidance_reaches_the_render(tiny_model):
    """`midas eval --guidance`: the head's text guidance of the scored rollout; 1 is the
    unguided rollout, and a checkpoint without a text input in its head refuses any other."""
    import torch

    from midas_cli.pipeline import check_guidance, model_generator

    with pytest.raises(MidasError, match="--guidance 2: .* no text input"):
        check_guidance(tiny_model, 2.0)
    tiny_model.cfg.text_in_head = True
    tiny_model.head_text = torch.nn.Linear(tiny_model.projector.text[0].in_features, tiny_model.cfg.backbone.hidden_size)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # a head that moves its sample and reads its condition
        for p in tiny_model.head.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
        torch.nn.init.normal_(tiny_model.head_text.weight, std=0.5, generator=g)
    case = make_eval_cases(1, 1.0, 0, tiny_model.cfg.autoencoder.width)[0]
    default = model_generator(tiny_model, seed=3)(case)
    assert np.array_equal(default, model_generator(tiny_model, seed=3, guidance=1.0)(case))
    assert not np.array_equal(default, model_generator(tiny_model, seed=3, guidance=3.0)(case))
    check_guidance(tiny_model, 3.0)
