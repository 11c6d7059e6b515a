"""The floor of the paper config on a GPU: the time a 480 ms chunk cannot beat.

Per chunk the backbone runs 6 forward passes (one per frame) at batch 1, so every pass reads
all of its weights: memory-bound. The head runs 4 Euler steps × 6 frames, also weight-bound
at 60 tokens. The DC-AE decoder is compute-bound (large convolutions at high resolution), so
its floor is FLOPs ÷ matrix rate; its FLOPs are counted with torch's FlopCounterMode on the
meta device (no weights allocated).

    python benchmarks/paper_floor.py [--bandwidth-tbs 3.35] [--tflops 989]

Defaults: H100 SXM (HBM3 3.35 TB/s, 989 dense bf16 TFLOP/s); H200: --bandwidth-tbs 4.8.
"""

from __future__ import annotations

import argparse
import json

import torch
from torch.utils.flop_counter import FlopCounterMode

from midas_cli.cli.info import describe
from midas_cli.model.config import preset


def decoder_flops(cfg) -> float:
    from diffusers import AutoencoderDC

    with torch.device("meta"):
        ae = AutoencoderDC(**cfg.autoencoder.architecture)
        h, w = cfg.latent_grid
        z = torch.empty(1, cfg.latent_channels, h, w)
        with FlopCounterMode(display=False) as counter:
            ae.decode(z)
    return float(counter.get_total_flops())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bandwidth-tbs", type=float, default=3.35)
    ap.add_argument("--tflops", type=float, default=989.0)
    ap.add_argument("--bytes-per-param", type=float, default=2.0, help="2 for bf16")
    args = ap.parse_args()
    cfg = preset("paper")
    info = describe("paper")
    bw, rate = args.bandwidth_tbs * 1e12, args.tflops * 1e12
    f, steps = cfg.frames_per_chunk, cfg.head.steps
    backbone_s = f * info["params"]["backbone"] * args.bytes_per_param / bw
    head_s = f * steps * info["params"]["head"] * args.bytes_per_param / bw
    dec_flops = decoder_flops(cfg)
    decode_s = f * dec_flops / rate
    floor = {"backbone_ms": 1e3 * backbone_s, "head_ms": 1e3 * head_s, "decode_ms": 1e3 * decode_s,
             "decoder_gflops_per_frame": dec_flops / 1e9,
             "chunk_floor_ms": 1e3 * (backbone_s + head_s + decode_s), "chunk_budget_ms": 120.0,
             "assumptions": {"bandwidth_tbs": args.bandwidth_tbs, "tflops": args.tflops,
                             "bytes_per_param": args.bytes_per_param}}
    print(json.dumps(floor, indent=1))


if __name__ == "__main__":
    main()
