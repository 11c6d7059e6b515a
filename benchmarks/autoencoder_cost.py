"""What an autoencoder costs on this machine: decode per chunk, encode per frame, a training step.

    python benchmarks/autoencoder_cost.py [--config demo] [--widths 16,32,64,128,128 ...]

Random weights (speed does not depend on them), the config's frame size and latent channels.
Each `--widths` adds a variant with those stage widths on both sides (the demo's previous
autoencoder was 16,32,64,128,128), so a lighter or heavier autoencoder can be priced before
training it. Decoding is timed the way `render()` runs it: one thread (the other runs
generation), channels-last, a chunk of frames at once.
"""

from __future__ import annotations

import argparse
import json
import time

import torch


def _time(fn, repeat: int) -> float:
    fn()
    fn()
    t0 = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - t0) / repeat


def measure(arch: dict, size: int, frames_per_chunk: int, threads: int) -> dict:
    from diffusers import AutoencoderDC

    ae = AutoencoderDC(**arch)
    z_ch = arch["latent_channels"]
    r = 2 ** (len(arch["encoder_block_out_channels"]) - 1)
    prev = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        dec = ae.eval().to(memory_format=torch.channels_last)
        z = torch.randn(frames_per_chunk, z_ch, size // r, size // r).to(memory_format=torch.channels_last)
        with torch.inference_mode():
            decode_s = _time(lambda: dec.decode(z), 10)
        torch.set_num_threads(threads)
        x = torch.randn(32, 3, size, size).to(memory_format=torch.channels_last)
        with torch.inference_mode():
            encode_s = _time(lambda: dec.encode(x), 3) / 32
        ae = ae.train().to(memory_format=torch.contiguous_format)
        opt = torch.optim.AdamW(ae.parameters(), 1e-3)
        xb = torch.randn(8, 3, size, size)

        def step():
            rec = ae.decode(ae.encode(xb).latent).sample
            loss = (rec - xb).abs().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()

        step_s = _time(step, 5)
    finally:
        torch.set_num_threads(prev)
    return dict(params_m=round(sum(p.numel() for p in ae.parameters()) / 1e6, 2),
                decode_chunk_ms=round(decode_s * 1e3, 1), encode_frame_ms=round(encode_s * 1e3, 2),
                train_step_ms=round(step_s * 1e3))


def main():
    from midas_cli.model.config import preset

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="demo")
    ap.add_argument("--widths", action="append", default=[], help="comma-separated stage widths, both sides")
    ap.add_argument("--threads", type=int, default=2, help="threads for encoding and the training step")
    args = ap.parse_args()
    cfg = preset(args.config)
    base = dict(cfg.autoencoder.architecture)
    variants = {f"{args.config} ({','.join(map(str, base['decoder_block_out_channels']))})": base}
    for w in args.widths:
        widths = tuple(int(v) for v in w.split(","))
        variants[w] = dict(base, encoder_block_out_channels=widths, decoder_block_out_channels=widths)
    out = {name: measure(arch, cfg.autoencoder.width, cfg.frames_per_chunk, args.threads)
           for name, arch in variants.items()}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
