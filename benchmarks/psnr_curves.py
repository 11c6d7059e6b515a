"""Per-second PSNR of several `midas eval --json` results in one plot.

    midas eval --checkpoint C --cases 8 --seconds 60 --json > shipped.json
    midas eval --baseline static --cases 8 --seconds 60 --json > static.json
    python benchmarks/psnr_curves.py shipped.json:"shipped demo" static.json:"static reference" --out psnr.png

Each argument is FILE or FILE:LABEL (the label defaults to the result's generator name).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", nargs="+", help="FILE or FILE:LABEL of `midas eval --json` output")
    ap.add_argument("--out", default="psnr_per_second.png")
    ap.add_argument("--title", default=None)
    args = ap.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(11, 4.6), dpi=110)
    for item in args.results:
        path, _, label = item.partition(":")
        result = json.loads(Path(path).read_text())
        curve = result["psnr_per_second"]
        label = label or result.get("generator", Path(path).stem)
        style = "--" if "baseline" in result.get("generator", "") or "static" in label else "-"
        ax.plot(range(1, len(curve) + 1), curve, style, label=f"{label} ({result['psnr_db']:.1f} dB)")
        cases, seconds = result["cases"], result["seconds"]
    ax.set_xlabel("second of the clip")
    ax.set_ylabel("PSNR against the truth (dB)")
    ax.set_title(args.title or f"held-out cases: {cases} × {seconds:g} s (mean per second)")
    ax.grid(alpha=0.3)
    # beside the axes, not on them: with many curves an inner legend hides some of them
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    fig.savefig(args.out, bbox_inches="tight")
    print(args.out)


if __name__ == "__main__":
    main()
