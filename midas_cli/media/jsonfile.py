"""Read a JSON file and validate it against a schema shipped in the package, one-line errors.

Messages name the file and the JSON path of the bad value: `head.json: keyframes[3].t: ...`.
Checks a schema cannot express (times increasing, times inside the clip) are `check_times`.
"""

from __future__ import annotations

import json
import math
import os
import reprlib
from functools import lru_cache
from importlib import resources

from midas_cli.errors import MidasError
from midas_cli.media.files import check_input_file



def _short(value) -> str:
    """repr() cut to a readable length (a 10 000-item list is not a message)."""
    r = reprlib.Repr()  # keyword arguments only from Python 3.12
    r.maxstring, r.maxother, r.maxlist, r.maxdict, r.maxlevel = 40, 40, 4, 3, 2
    return r.repr(value)


@lru_cache(maxsize=None)
def schema(name: str) -> dict:
    """The JSON Schema `midas_cli/media/schemas/<name>.schema.json`."""
    return json.loads((resources.files("midas_cli.media") / "schemas" / f"{name}.schema.json").read_text())


def json_path(parts) -> str:
    """['keyframes', 3, 't'] → 'keyframes[3].t'; [] → '(top level)'."""
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(top level)"


def _describe(error) -> str:
    """jsonschema's message, shortened and made plain for the common cases."""
    kind, value = error.validator, error.instance
    if kind == "type":
        types = error.validator_value if isinstance(error.validator_value, list) else [error.validator_value]
        return f"{_short(value)} is not of type {', '.join(repr(t) for t in types)}"
    if kind in ("minLength", "pattern") and isinstance(value, str):
        return "must not be empty or blank"
    if kind in ("minimum", "maximum") and "minimum" in error.schema and "maximum" in error.schema:
        return f"{value!r} is out of range [{error.schema['minimum']!r}, {error.schema['maximum']!r}]"
    if kind == "minimum":
        return f"{value!r} is below the minimum of {error.validator_value!r}"
    if kind == "maximum":
        return f"{value!r} is greater than the maximum of {error.validator_value!r}"
    if kind == "minItems" and isinstance(value, list) and not value:
        return "must not be empty"
    if kind == "const":
        return f"{_short(value)} is not supported (expected {error.validator_value!r})"
    message = error.message
    return message if len(message) <= 200 else message[:197] + "..."


def _order(error):
    return [(0, p, "") if isinstance(p, int) else (1, 0, str(p)) for p in error.absolute_path]


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text} is out of range")
    return value


def _no_constants(name: str):
    raise ValueError(f"{name} is not a number JSON allows")


def read_json(path: str | os.PathLike):
    """Parse a JSON file (UTF-8, BOM tolerated; NaN/Infinity refused) or raise a MidasError."""
    path = check_input_file(path, "a JSON file")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise MidasError(f"{path}: not a text file (JSON expected)") from None
    except OSError as e:
        raise MidasError(f"{path}: cannot read ({e.strerror or e})") from None
    try:
        return json.loads(text, parse_float=_finite, parse_constant=_no_constants)
    except json.JSONDecodeError as e:
        raise MidasError(f"{path}: malformed JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
    except (ValueError, RecursionError) as e:
        raise MidasError(f"{path}: malformed JSON ({e})") from None


def read_validated(path: str | os.PathLike, schema_name: str) -> dict:
    """`read_json` + validation against the named schema; the first error (in file order) is raised."""
    import jsonschema

    data = read_json(path)
    validator = jsonschema.Draft202012Validator(schema(schema_name))
    errors = sorted(validator.iter_errors(data), key=_order)
    if errors:
        e = errors[0]
        raise MidasError(f"{path}: {json_path(e.absolute_path)}: {_describe(e)}")
    return data


def check_times(path, items: list[dict], key: str, duration: float | None) -> None:
    """Times strictly increasing and, when `duration` is given, not after the end of the clip."""
    prev = None
    for i, item in enumerate(items):
        t = float(item["t"])
        if prev is not None and t <= prev:
            raise MidasError(f"{path}: {key}[{i}].t: times must increase ({t:g} after {prev:g})")
        if duration is not None and t > duration + 1e-6:
            raise MidasError(f"{path}: {key}[{i}].t: {t:g} s is after the end of the clip ({duration:g} s)")
        prev = t
