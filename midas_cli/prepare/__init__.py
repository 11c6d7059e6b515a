"""`midas prepare`: real talking-head footage → a manifest folder `midas train` reads (docs/prepare.md).

Data flow, one module per stage: probe (is the file usable?) → decode (12.5 fps frames,
16 kHz mono audio) → faces (detector + 68 landmarks, an optional extra) → shots and track
(scene cuts, the dominant face, the reasons a stretch is rejected) → crop (one fixed square
per clip) → headpose (landmarks → yaw, pitch, roll, x, y, scale) → manifest (files + lines)
→ run (inputs across ranks, resume, report).
"""

__all__ = ["PrepareOptions", "prepare"]


def __getattr__(name):  # lazy: `import midas_cli.prepare.faces` must not pull in the whole run
    if name in __all__:
        from midas_cli.prepare import run

        return getattr(run, name)
    raise AttributeError(name)
