"""`midas info`: what a config or checkpoint is made of, without allocating its weights."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import torch
import typer

from midas_cli.cli.common import console_out

COMPONENTS = {
    "autoencoder": ("autoencoder.",),
    "conditions": ("audio_features.", "text_encoder.", "projector."),
    "head": ("head.",),
    "backbone": ("backbone.", "frame_in.", "frame_pos", "type_embed.", "noise."),
}


def describe(name: str | None) -> dict:
    """Parameter counts per component and the geometry of a preset or checkpoint (meta device)."""
    from midas_cli.model.checkpoint import build_model, config_or_checkpoint, demo_checkpoint_path

    if name is None:
        name = str(demo_checkpoint_path()) if (demo_checkpoint_path() / "config.json").exists() else "demo"
    cfg, ckpt = config_or_checkpoint(name)
    with torch.device("meta"):
        model = build_model(cfg, ckpt, load_pretrained=False)
    params = {k: 0 for k in COMPONENTS}
    for pname, p in model.named_parameters():
        for comp, prefixes in COMPONENTS.items():
            if pname.startswith(prefixes):
                params[comp] += p.numel()
                break
        else:
            raise AssertionError(f"parameter {pname} belongs to no component")
    info = {
        "name": name,
        "params": params,
        "params_total": sum(params.values()),
        "tokens_per_frame": cfg.tokens_per_frame,
        "latent_channels": cfg.latent_channels,
        "latent_grid": list(cfg.latent_grid),
        "fps": cfg.fps,
        "frames_per_chunk": cfg.frames_per_chunk,
        "tokens_per_chunk": cfg.tokens_per_chunk,
        "window_chunks": cfg.window_chunks,
        "resolution": [cfg.autoencoder.width, cfg.autoencoder.height],
        "audio": cfg.audio.kind,
        "text": cfg.text.kind,
        "head": cfg.head.kind,
        "head_steps": cfg.head.steps,
    }
    if ckpt is not None:
        info["checkpoint"] = str(ckpt)
        info["checkpoint_bytes"] = sum(p.stat().st_size for p in Path(ckpt).rglob("*") if p.is_file())
    return info


def info(
    name: Annotated[str | None, typer.Argument(
        help="A preset (tiny, demo, paper), a checkpoint folder or a Hub id. Default: the shipped demo checkpoint.",
        show_default=False)] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")] = False,
):
    """Parameter counts per component, tokens per frame, fps, resolution and checkpoint size."""
    d = describe(name)
    if json_out:
        print(json.dumps(d))
        return
    from rich.table import Table

    t = Table(title=f"midas info: {d['name']}", show_header=False)
    for comp, n in d["params"].items():
        t.add_row(f"params.{comp}", f"{n:,}")
    t.add_row("params total", f"{d['params_total']:,}")
    t.add_row("resolution", "{}×{}".format(*d["resolution"]))
    t.add_row("tokens per frame", f"{d['tokens_per_frame']} ({d['latent_grid'][0]}×{d['latent_grid'][1]} × "
              f"{d['latent_channels']} ch)")
    t.add_row("fps / frames per chunk", f"{d['fps']} / {d['frames_per_chunk']}")
    t.add_row("tokens per chunk / window", f"{d['tokens_per_chunk']} / {d['window_chunks']} chunks")
    t.add_row("audio / text / head", f"{d['audio']} / {d['text']} / {d['head']} ({d['head_steps']} steps)")
    if "checkpoint_bytes" in d:
        t.add_row("checkpoint", f"{d['checkpoint']} ({d['checkpoint_bytes'] / 1e6:.1f} MB)")
    console_out.print(t)
