"""A corrupt checkpoint is one line on stderr naming the bad file, in every command that loads one.

A tiny checkpoint is copied into tmp_path and one of its files broken (truncated, another
format saved under the name, random bytes, wrong tensors, garbage JSON); each command must exit
non-zero with a single `error: ...` line that names that file, no traceback, and no output left.
"""

import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml
from PIL import Image
from typer.testing import CliRunner

from midas_cli.cli.app import app

runner = CliRunner()

MODEL = "model.safetensors"
AE = "autoencoder/diffusion_pytorch_model.safetensors"
AE_CONFIG = "autoencoder/config.json"


@pytest.fixture(scope="module")
def good_checkpoint(tmp_path_factory):
    from midas_cli.conditions.text import build_word_tokenizer
    from midas_cli.model.checkpoint import save_checkpoint
    from midas_cli.model.config import preset
    from midas_cli.model.midas import MidasModel

    torch.manual_seed(0)
    model = MidasModel(preset("tiny"), tokenizer=build_word_tokenizer(["a calm face"], 128))
    return save_checkpoint(model.eval(), tmp_path_factory.mktemp("good") / "tiny")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Inputs of every command, in a folder of their own (outputs go elsewhere)."""
    d = tmp_path_factory.mktemp("inputs")
    sf.write(d / "talk.wav", (0.2 * np.sin(np.arange(16000) / 10)).astype(np.float32), 16000)
    Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(d / "face.png")
    from safetensors.torch import save_file

    save_file({"latents": torch.zeros(2, 4, 8)}, str(d / "latents.safetensors"),
              metadata={"grid": "[2, 2]", "width": "64", "height": "64", "fps": "12.5"})
    return d


@pytest.fixture(scope="module")
def train_data(tmp_path_factory):
    from midas_cli.synth.dataset import write_dataset

    out = tmp_path_factory.mktemp("train_data")
    write_dataset(out, clips=1, seconds=1.0, seed=0, size=64, progress=False)
    return out


# ---- corruptions: each breaks one file of a copy and returns the file the error must name ----------


def _half(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _torch_save(path: Path) -> None:  # the zip format of torch.save, under the safetensors name
    buf = io.BytesIO()
    torch.save({"weight": torch.zeros(4)}, buf)
    path.write_bytes(buf.getvalue())


def _pickle(path: Path) -> None:
    buf = io.BytesIO()
    torch.save({"weight": torch.zeros(4)}, buf, _use_new_zipfile_serialization=False)
    path.write_bytes(buf.getvalue())


def _random(path: Path) -> None:
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())


def _retensor(path: Path, fn) -> None:
    from safetensors.torch import load_file, save_file

    save_file(fn(load_file(str(path))), str(path))


def _wrong_shape(state):
    k = sorted(state)[0]
    return {**state, k: torch.zeros(3, 3)}


def _wrong_keys(state):
    return {f"old.{k}": v for k, v in state.items()}


CORRUPTIONS = {
    "model-truncated": (MODEL, _half),
    "model-torch-save-zip": (MODEL, _torch_save),
    "model-pickle": (MODEL, _pickle),
    "model-random-bytes": (MODEL, _random),
    "model-empty": (MODEL, lambda p: p.write_bytes(b"")),
    "model-wrong-shapes": (MODEL, lambda p: _retensor(p, _wrong_shape)),
    "model-wrong-keys": (MODEL, lambda p: _retensor(p, _wrong_keys)),
    "ae-truncated": (AE, _half),
    "ae-torch-save-zip": (AE, _torch_save),
    "ae-random-bytes": (AE, _random),
    "ae-wrong-shapes": (AE, lambda p: _retensor(p, _wrong_shape)),
    "ae-wrong-keys": (AE, lambda p: _retensor(p, _wrong_keys)),
    "ae-config-garbage": (AE_CONFIG, lambda p: p.write_text("{not json")),
    "ae-config-random-bytes": (AE_CONFIG, _random),
    "ae-config-wrong-values": (AE_CONFIG, lambda p: p.write_text(json.dumps(
        {**json.loads(p.read_text()), "latent_channels": "many"}))),
    "config-garbage": ("config.json", lambda p: p.write_text('{"autoencoder": ')),
    "config-random-bytes": ("config.json", _random),
    "tokenizer-garbage": ("text_tokenizer.json", lambda p: p.write_text("[1, 2")),
    "tokenizer-random-bytes": ("text_tokenizer.json", _random),
}
# every command gets one corruption of each file; `generate` (the one users meet first) gets all
CORE = ["model-truncated", "model-torch-save-zip", "model-wrong-shapes", "ae-truncated", "ae-config-garbage",
        "config-random-bytes", "tokenizer-garbage"]


def _corrupt(good: Path, tmp_path: Path, corruption: str) -> tuple[Path, Path]:
    ckpt = tmp_path / "ckpt"
    shutil.copytree(good, ckpt)
    rel, fn = CORRUPTIONS[corruption]
    fn(ckpt / rel)
    return ckpt, ckpt / rel


# ---- commands: each returns (argv, paths that must not exist afterwards) ---------------------------


def _generate(ckpt, out, inputs, train_data):
    o = out / "take.mp4"
    return ["generate", "-c", str(ckpt), "--audio", str(inputs / "talk.wav"), "--ref", str(inputs / "face.png"),
            "--device", "cpu", "--out", str(o)], [o]


def _eval(ckpt, out, inputs, train_data):
    return ["eval", "-c", str(ckpt), "--cases", "1", "--seconds", "1", "--size", "64", "--device", "cpu"], []


def _eval_ae_baseline(ckpt, out, inputs, train_data):
    return ["eval", "--baseline", "autoencoder", "-c", str(ckpt), "--cases", "1", "--seconds", "1", "--size", "64",
            "--device", "cpu"], []


def _bench(ckpt, out, inputs, train_data):
    return ["bench", "-c", str(ckpt), "--seconds", "1", "--device", "cpu", "--no-mux", "--json"], []


def _batch(ckpt, out, inputs, train_data):
    o = out / "renders" / "a.mp4"
    recipe = out / "batch.yaml"
    recipe.write_text(yaml.safe_dump({"jobs": [{"audio": str(inputs / "talk.wav"), "ref": str(inputs / "face.png"),
                                                "out": str(o), "checkpoint": str(ckpt), "name": "a"}]}))
    return ["batch", str(recipe), "--device", "cpu"], [o]


def _encode_ae(ckpt, out, inputs, train_data):
    o = out / "z.safetensors"
    return ["encode-ae", str(inputs / "face.png"), "-c", str(ckpt), "--out", str(o), "--device", "cpu"], [o]


def _decode_ae(ckpt, out, inputs, train_data):
    o = out / "frames.mp4"
    return ["decode-ae", str(inputs / "latents.safetensors"), "-c", str(ckpt), "--out", str(o), "--device", "cpu"], [o]


def _info(ckpt, out, inputs, train_data):
    return ["info", str(ckpt), "--json"], []


COMMANDS = {"generate": _generate, "eval": _eval, "eval-ae-baseline": _eval_ae_baseline, "bench": _bench,
            "batch": _batch, "encode-ae": _encode_ae, "decode-ae": _decode_ae, "info": _info}


def _assert_one_line_error(r, named: Path, outputs, last_line_only=False):
    assert r.exit_code == 1, (r.exit_code, r.output)
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)  # nothing escaped
    assert "Traceback" not in r.output
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert lines, r.output
    if not last_line_only:
        assert len(lines) == 1, r.stderr
    assert str(named) in lines[-1], r.stderr
    for o in outputs:
        assert not o.exists(), o
        assert not list(o.parent.glob(f".{o.name}*")) if o.parent.exists() else True  # no .partial left


def _cases():
    for cmd in COMMANDS:
        for c in (CORRUPTIONS if cmd == "generate" else CORE):
            if cmd == "eval-ae-baseline" and not c.startswith("ae-"):
                continue
            yield pytest.param(cmd, c, id=f"{cmd}-{c}")


@pytest.mark.parametrize("command, corruption", list(_cases()))
def test_a_corrupt_checkpoint_is_one_line_naming_the_file(command, corruption, good_checkpoint, inputs, train_data,
                                                          tmp_path):
    ckpt, bad = _corrupt(good_checkpoint, tmp_path, corruption)
    out = tmp_path / "out"
    out.mkdir()
    argv, outputs = COMMANDS[command](ckpt, out, inputs, train_data)
    r = runner.invoke(app, argv)
    _assert_one_line_error(r, bad, outputs)
    if command == "batch":  # the job fails with the reason, the batch exits 1
        assert "a: failed:" in r.stderr


def test_a_missing_autoencoder_weights_file_is_named(good_checkpoint, inputs, train_data, tmp_path):
    ckpt = tmp_path / "ckpt"
    shutil.copytree(good_checkpoint, ckpt)
    (ckpt / AE).unlink()
    argv, outputs = _generate(ckpt, tmp_path, inputs, train_data)
    r = runner.invoke(app, argv)
    _assert_one_line_error(r, ckpt / "autoencoder", outputs)
    assert "diffusion_pytorch_model.safetensors is missing" in r.stderr


@pytest.mark.parametrize("corruption", ["ae-truncated", "ae-torch-save-zip", "ae-wrong-shapes", "ae-config-garbage"])
def test_train_with_a_corrupt_init_from_autoencoder(corruption, good_checkpoint, train_data, tmp_path):
    ckpt, bad = _corrupt(good_checkpoint, tmp_path, corruption)
    out = tmp_path / "run"
    r = runner.invoke(app, ["train", "demo_base", f"data.dir={train_data}", "model=tiny", f"output={out}",
                            f"autoencoder.init_from={ckpt}", "autoencoder.steps=1", "train.steps=1",
                            "device=cpu"])
    # train logs its progress on stderr first; the error is the last line
    _assert_one_line_error(r, bad, [out / "checkpoint"], last_line_only=True)
    assert r.stderr.strip().splitlines()[-1].startswith("error:")


# ---- Whisper / T5 components saved inside the checkpoint ---------------------------------------------


@pytest.fixture(scope="module")
def whisper_t5_checkpoint(tmp_path_factory):
    from test_conditions import _tiny_whisper_t5_model

    from midas_cli.model.checkpoint import save_checkpoint

    return save_checkpoint(_tiny_whisper_t5_model(), tmp_path_factory.mktemp("wt5") / "ckpt")


ENCODER_CORRUPTIONS = {
    "whisper-weights-truncated": ("audio_encoder/model.safetensors", _half),
    "whisper-weights-wrong-keys": ("audio_encoder/model.safetensors", lambda p: _retensor(p, _wrong_keys)),
    "whisper-config-garbage": ("audio_encoder/config.json", lambda p: p.write_text("{")),
    "t5-weights-torch-save-zip": ("text_encoder/model.safetensors", _torch_save),
    "t5-weights-wrong-shapes": ("text_encoder/model.safetensors", lambda p: _retensor(p, _wrong_shape)),
    "t5-config-random-bytes": ("text_encoder/config.json", _random),
    "t5-tokenizer-garbage": ("text_encoder/tokenizer.json", lambda p: p.write_text("{")),
}


@pytest.mark.parametrize("corruption", list(ENCODER_CORRUPTIONS))
@pytest.mark.parametrize("command", ["generate", "info"])
def test_corrupt_encoder_folders(command, corruption, whisper_t5_checkpoint, inputs, train_data, tmp_path):
    rel, fn = ENCODER_CORRUPTIONS[corruption]
    ckpt = tmp_path / "ckpt"
    shutil.copytree(whisper_t5_checkpoint, ckpt)
    assert (ckpt / rel).exists(), sorted(os.listdir(ckpt / Path(rel).parent))
    fn(ckpt / rel)
    out = tmp_path / "out"
    out.mkdir()
    argv, outputs = COMMANDS[command](ckpt, out, inputs, train_data)
    r = runner.invoke(app, argv)
    _assert_one_line_error(r, ckpt / rel, outputs)


def test_a_sound_checkpoint_still_loads_everywhere(good_checkpoint, whisper_t5_checkpoint):
    from midas_cli.model.checkpoint import config_or_checkpoint, load_model

    for ckpt in (good_checkpoint, whisper_t5_checkpoint):
        load_model(ckpt)
        config_or_checkpoint(str(ckpt))
