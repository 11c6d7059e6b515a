"""`midas eval`: score a checkpoint (or a baseline) on the synthetic benchmark.

A thin layer over ``midas_cli.evaluation``: build held-out cases, get a ``generate(case)``
callable (a baseline, or ``midas_cli.pipeline.make_eval_generator`` for a checkpoint), run
``evaluate`` and print a table, or with ``--json`` exactly one JSON object on stdout.
Progress goes to stderr.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from midas_cli.cli.common import pick_device
from midas_cli.errors import MidasError

_ROWS = (  # key, label, format
    ("psnr_db", "PSNR (dB)", "{:.2f}"),
    ("ssim", "SSIM", "{:.4f}"),
    ("drift_db", "drift: PSNR first fifth - last fifth (dB)", "{:+.2f}"),
    ("lip_sync_acc", "lip-sync accuracy", "{:.3f}"),
    ("lip_sync_balanced_acc", "lip-sync balanced accuracy (chance 0.25)", "{:.3f}"),
    ("speaking_lip_sync_acc", "lip-sync accuracy while speaking", "{:.3f}"),
    ("expression_acc", "expression accuracy", "{:.3f}"),
    ("pose_err", "pose error (deg, yaw/pitch/roll)", "{:.2f}"),
    ("listening_acc", "listening: mouth closed", "{:.3f}"),
    ("realtime_factor", "generation time / media time", "{:.3f}"),
)


def _table(result: dict) -> Table:
    t = Table(title=f"midas eval: {result['generator']} — {result['cases']} cases × "
                    f"{result['seconds']:.1f} s")
    t.add_column("metric")
    t.add_column("value", justify="right")
    for key, label, fmt in _ROWS:
        v = result.get(key)
        t.add_row(label, "n/a" if v is None else fmt.format(v))
    per_sec = result.get("psnr_per_second") or []
    if per_sec:
        t.add_row("PSNR per second (first … last)",
                  f"{per_sec[0]:.1f} … {per_sec[-1]:.1f}")
    return t


def _minute_table(rows: list[dict]) -> Table:
    t = Table(title="per minute (all cases pooled)")
    for col in ("minute", "PSNR (dB)", "balanced lip-sync", "expression", "pose (deg)",
                "listening (frames)"):
        t.add_column(col, justify="right")
    fmt = lambda v, f: "n/a" if v is None else f.format(v)  # noqa: E731
    for r in rows:
        t.add_row(str(r["minute"]), fmt(r["psnr_db"], "{:.2f}"),
                  fmt(r["lip_sync_balanced_acc"], "{:.3f}"), fmt(r["expression_acc"], "{:.3f}"),
                  fmt(r["pose_err"], "{:.2f}"),
                  f'{fmt(r["listening_acc"], "{:.3f}")} ({r["listening_frames"]})')
    return t


def eval_cmd(
    checkpoint: Annotated[Optional[str], typer.Option(
        "--checkpoint", "-c", help="Checkpoint folder or Hub id to score (with --baseline "
        "autoencoder: whose autoencoder). Default: the demo checkpoint shipped in the package.")] = None,
    baseline: Annotated[Optional[str], typer.Option(
        "--baseline", help="Score a reference generator instead of a model: 'truth' (the true "
        "frames, upper bound), 'static' (the reference photo repeated, lower bound) or "
        "'autoencoder' (the true frames through the checkpoint's autoencoder: the best any "
        "model in its latent space can score).")] = None,
    cases: Annotated[int, typer.Option("--cases", min=1, help="Number of held-out clips.")] = 8,
    seconds: Annotated[float, typer.Option(
        "--seconds", min=0.5, help="Length of each held-out clip in seconds.")] = 60.0,
    seed: Annotated[int, typer.Option(
        "--seed", help="Seed of the held-out cases (and of the generator's sampling).")] = 0,
    no_noise_injection: Annotated[bool, typer.Option(
        "--no-noise-injection", help="Generate with the context noise level at 0 (the ablation "
        "of MIDAS's noise injection).")] = False,
    context_noise: Annotated[Optional[float], typer.Option(
        "--context-noise", min=0.0, help="Noise level σ given to generated context frames "
        "(default: the checkpoint's noise.inference_sigma).")] = None,
    steps: Annotated[Optional[int], typer.Option(
        "--steps", min=1, help="Diffusion-head Euler steps per frame (default: the checkpoint's, "
        "4).")] = None,
    guidance: Annotated[Optional[float], typer.Option(
        "--guidance", help="Classifier-free guidance scale on the prompt in the diffusion head "
        "(1 = none; default: the checkpoint's head.guidance; needs text_in_head).")] = None,
    temperature: Annotated[Optional[float], typer.Option(
        "--temperature", min=0.0, help="Scale of the diffusion head's starting noise (1 = full "
        "noise, 0 = deterministic; default: the checkpoint's head.temperature).")] = None,
    json_out: Annotated[bool, typer.Option(
        "--json", help="Print one JSON object with all metrics on stdout (nothing else).")] = False,
    size: Annotated[int, typer.Option(
        "--size", help="Frame size of the held-out cases (generated frames of another size "
        "are resized to it).")] = 128,
    device: Annotated[str, typer.Option(
        "--device", help="Torch device for the model: auto, cpu or cuda[:N].")] = "auto",
) -> None:
    """Score lip-sync, expression, pose, listening and pixel fidelity over long held-out clips."""
    from midas_cli.evaluation import BASELINES, evaluate, make_eval_cases

    model_baselines = ("autoencoder",)  # baselines built from a checkpoint
    if baseline is not None and baseline not in BASELINES and baseline not in model_baselines:
        raise MidasError(f"--baseline {baseline}: unknown baseline; choose "
                         f"{', '.join(repr(b) for b in (*BASELINES, *model_baselines))}")
    if baseline in BASELINES and checkpoint is not None:
        raise MidasError(f"--baseline {baseline} and --checkpoint: give one or the other, not both")
    if baseline in BASELINES:
        generate, name = BASELINES[baseline], f"baseline:{baseline}"
    else:
        try:
            from midas_cli.pipeline import make_eval_generator
        except ImportError as e:  # the module, or the function in it, is missing
            if e.name != "midas_cli.pipeline":
                raise
            raise MidasError("--checkpoint: this install has no model evaluation "
                             "(midas_cli.pipeline.make_eval_generator); use --baseline "
                             "truth|static") from e

        pick_device(device)  # a bad --device fails here, before any work
        generate = make_eval_generator(checkpoint, noise_injection=not no_noise_injection,
                                       seed=seed, device=device, reconstruct=baseline == "autoencoder",
                                       context_sigma=context_noise, steps=steps, guidance=guidance,
                                       temperature=temperature)
        name = checkpoint or "demo"
        if baseline is not None:
            name = f"baseline:{baseline}({name})"
    with Console(stderr=True).status(f"rendering {cases} held-out case(s) of {seconds:g} s"):
        eval_cases = make_eval_cases(cases, seconds, seed=seed, size=size)
    result = evaluate(generate, eval_cases, progress=True)
    result = {"generator": name, "noise_injection": baseline is None and not no_noise_injection,
              "context_noise": context_noise, "steps": steps, "guidance": guidance,
              "temperature": temperature,
              "seed": seed, "size": size, **result}
    if json_out:
        sys.stdout.write(json.dumps(result) + "\n")
        sys.stdout.flush()
    else:
        Console().print(_table(result))
        if result.get("per_minute"):
            Console().print(_minute_table(result["per_minute"]))
