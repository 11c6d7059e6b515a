"""Reading a checkpoint's files defensively.

A file that is truncated, corrupt, or in another format saved under the expected name (a
`torch.save` zip, a pickle, random bytes) becomes a `MidasError` naming it, never a
`SafetensorError` / `JSONDecodeError` / state-dict traceback from the library underneath. The
checks read headers only (safetensors keeps the names and shapes of all tensors at the start of
the file), so they cost nothing next to the load itself.
"""

from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path

from midas_cli.errors import MidasError

HINT = "re-download or re-save the checkpoint"


def reason(e: BaseException) -> str:
    """`Type: first line of the message`, for one-line errors."""
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[0]}" if lines else type(e).__name__


def read_json_object(path: str | Path) -> dict:
    """A JSON file that must hold an object; anything else is a MidasError naming the file."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise MidasError(f"{path}: cannot read ({e.strerror or e})") from None
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError (binary garbage)
        raise MidasError(f"{path}: not valid JSON, the file is corrupt or truncated ({reason(e)}); {HINT}") from None
    if not isinstance(data, dict):
        raise MidasError(f"{path}: expected a JSON object, got {type(data).__name__}; {HINT}")
    return data


def _sniff(path: Path) -> str:
    """What a file that is not safetensors looks like, from its first bytes."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError:
        return ""
    if head.startswith(b"PK\x03\x04"):
        return "a zip archive (torch.save format?), not safetensors"
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "a Python pickle, not safetensors"
    if head.startswith(b"{") or head.startswith(b"["):
        return "text (JSON?), not safetensors"
    return ""


def safetensors_shapes(path: str | Path) -> dict[str, tuple[int, ...]]:
    """Tensor name → shape from a safetensors header; a bad file is a MidasError naming it."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise MidasError(f"{path}: is missing; {HINT}")
    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except OSError as e:
        raise MidasError(f"{path}: cannot read ({e.strerror or e})") from None
    except Exception as e:  # SafetensorError and friends
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if "not fully covered" in msg:
            what = "truncated (its header lists more data than the file holds)"
        else:
            what = _sniff(path) or f"corrupt or in another format ({msg})"
        raise MidasError(f"{path}: not a valid safetensors file: {what}; {HINT}") from None


def check_shapes(path: str | Path, found: dict, expected: dict, against: str) -> None:
    """Names and shapes in a weights file against the model's; a mismatch names the file."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    wrong = [k for k in sorted(set(found) & set(expected)) if tuple(found[k]) != tuple(expected[k])]
    if not (missing or unexpected or wrong):
        return
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing, e.g. {missing[:3]}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected, e.g. {unexpected[:3]}")
    if wrong:
        k = wrong[0]
        parts.append(f"{len(wrong)} of the wrong shape, e.g. {k!r}: {list(found[k])} in the file, "
                     f"{list(expected[k])} in the model")
    raise MidasError(f"{path}: weights do not match {against} ({'; '.join(parts)})")


@contextlib.contextmanager
def quiet_hf_logs():
    """diffusers/transformers warnings and "Loading weights" bars off while loading: what they would
    warn about here becomes our error, and stderr keeps to one line."""
    loggers = [logging.getLogger(name) for name in ("diffusers", "transformers")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(max(lg.level, logging.ERROR))
    bars = None
    try:
        from transformers.utils import logging as hf_logging

        bars = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()
    except ImportError:
        hf_logging = None
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
        if bars:
            hf_logging.enable_progress_bar()


def check_hf_folder(folder: str | Path, what: str) -> None:
    """A local transformers folder: config.json there, every *.json (config, tokenizer) a JSON object,
    every *.safetensors header readable, and (when config.json names a transformers class) the tensors'
    names and shapes those of that class (built on the meta device; tied weights may be absent)."""
    import torch

    folder = Path(folder)
    if not folder.is_dir():
        return  # a Hub id: the library fetches and checks it
    config_path = folder / "config.json"
    if not config_path.exists():
        raise MidasError(f"{folder}: not a {what} folder (no config.json); {HINT}")
    for f in sorted(folder.glob("*.json")):
        read_json_object(f)
    files = sorted(folder.glob("*.safetensors"))
    found: dict = {}
    for f in files:
        found.update(safetensors_shapes(f))
    arch = (read_json_object(config_path).get("architectures") or [None])[0]
    import transformers

    cls = getattr(transformers, arch, None) if isinstance(arch, str) else None
    if cls is None and arch == "WhisperEncoder":
        from transformers.models.whisper.modeling_whisper import WhisperEncoder as cls
    if cls is None or not files:
        return
    try:
        with quiet_hf_logs(), torch.device("meta"):
            model = cls(transformers.AutoConfig.from_pretrained(str(folder)))
    except Exception as e:
        raise MidasError(f"{config_path}: not a {what} config ({reason(e)}); {HINT}") from None
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    tied = getattr(model, "all_tied_weights_keys", None) or getattr(model, "_tied_weights_keys", None) or ()
    for k in tied:  # stored once, under the weight they are tied to
        if k not in found:
            expected.pop(k, None)
    check_shapes(files[0] if len(files) == 1 else folder, found, expected, config_path.name)


def check_loading_info(info: dict, source: str | Path, what: str, prefix: str = "") -> None:
    """`output_loading_info` of a transformers `from_pretrained`: missing or mismatched weights are an error
    (the library would initialise them at random and only warn)."""
    missing = sorted(k for k in info.get("missing_keys", ()) if k.startswith(prefix))
    mismatched = [m[0] if isinstance(m, (tuple, list)) else m for m in info.get("mismatched_keys", ())]
    if missing or mismatched:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing, e.g. {missing[:3]}")
        if mismatched:
            parts.append(f"{len(mismatched)} of the wrong shape, e.g. {mismatched[:3]}")
        raise MidasError(f"{source}: the {what} weights do not match its config.json ({'; '.join(parts)}); {HINT}")
