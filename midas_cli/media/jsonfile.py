"""Read a JSON file and validate it against a schema shipped in the package, one-line errors."""

from __future__ import annotations

import json
import os
from functools import lru_cache
from importlib import resources
from pathlib import Path

from midas_cli.errors import MidasError


@lru_cache(maxsize=None)
def schema(name: str) -> dict:
    return json.loads((resources.files("midas_cli.media") / "schemas" / f"{name}.schema.json").read_text())


def _where(error) -> str:
    parts = []
    for p in error.absolute_path:
        parts.append(f"[{p}]" if isinstance(p, int) else (f".{p}" if parts else str(p)))
    return "".join(parts) or "(top level)"


def read_validated(path: str | os.PathLike, schema_name: str) -> dict:
    import jsonschema

    path = Path(path)
    if not path.exists():
        raise MidasError(f"{path}: no such file")
    if path.is_dir():
        raise MidasError(f"{path}: is a folder, not a JSON file")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise MidasError(f"{path}: not a text file") from None
    except json.JSONDecodeError as e:
        raise MidasError(f"{path}: malformed JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
    validator = jsonschema.Draft202012Validator(schema(schema_name))
    errors = sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path))
    if errors:
        e = errors[0]
        raise MidasError(f"{path}: {_where(e)}: {e.message}")
    return data


def check_times(path, items: list[dict], key: str, duration: float | None) -> None:
    prev = None
    for i, item in enumerate(items):
        t = float(item["t"])
        if prev is not None and t <= prev:
            raise MidasError(f"{path}: {key}[{i}].t: times must increase ({t:g} after {prev:g})")
        if duration is not None and t > duration + 1e-6:
            raise MidasError(f"{path}: {key}[{i}].t: {t:g} s is after the end of the clip ({duration:g} s)")
        prev = t
