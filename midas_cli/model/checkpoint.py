"""Checkpoints: a folder, local or a Hub repository, saved and loaded in one layout.

    config.json            the whole MidasConfig
    model.safetensors      backbone, diffusion head, projectors, embeddings (everything trained)
    text_tokenizer.json    word-level tokenizer of the learned text encoder
    autoencoder/           diffusers AutoencoderDC folder   ┐ unless the config names a Hub id
    audio_encoder/         transformers Whisper encoder     │ for them (frozen public weights
    text_encoder/          transformers T5 encoder + tokenizer ┘ are referenced, not copied)

Loading takes a local folder or a Hub id (huggingface_hub: cache, revision, HF_HUB_OFFLINE).
Saving writes to a temporary folder and renames it at the end, so a crash never leaves half
a checkpoint where a good one was.
"""

from __future__ import annotations

import copy
import os
import shutil
from importlib import resources
from pathlib import Path

import torch

from midas_cli.errors import MidasError
from midas_cli.model.config import MidasConfig, preset

CHECKPOINT_FILES = ["config.json", "model.safetensors", "text_tokenizer.json",
                    "autoencoder/*", "audio_encoder/*", "text_encoder/*"]
SUBFOLDERS = {"autoencoder": "autoencoder", "audio": "audio_encoder", "text": "text_encoder"}


def demo_checkpoint_path() -> Path:
    return Path(str(resources.files("midas_cli"))) / "demo_checkpoint"


def _is_hub_id(ref: str | None) -> bool:
    return bool(ref) and not Path(ref).expanduser().exists() and ref.count("/") == 1 and not ref.startswith((".", "/"))


# ---- saving ---------------------------------------------------------------------------------


def save_checkpoint(model, path: str | os.PathLike, dtype: torch.dtype | None = None,
                    state_dict: dict | None = None, config: MidasConfig | None = None) -> Path:
    """Write `model` as a checkpoint folder at `path` (replacing it atomically).

    state_dict: the model's full state to write instead of its own (an FSDP-sharded model's
    parameters are shards; pass `training.parallel.full_state_dicts`' gathered one). Sub-folder
    components (autoencoder, encoders) are still written from `model`: FSDP leaves them whole.
    config: the MidasConfig to write instead of `model.cfg` (with a recipe's `sampling` settings).
    """
    from safetensors.torch import save_file

    path = Path(path)
    tmp = path.with_name(f".{path.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    cfg = copy.deepcopy(model.cfg if config is None else config)
    try:
        if not _is_hub_id(cfg.autoencoder.pretrained):
            model.autoencoder.dcae.save_pretrained(tmp / SUBFOLDERS["autoencoder"])
            cfg.autoencoder.pretrained = SUBFOLDERS["autoencoder"]
        if cfg.audio.kind == "whisper" and not _is_hub_id(cfg.audio.pretrained):
            model.audio_features.encoder.save_pretrained(tmp / SUBFOLDERS["audio"])
            cfg.audio.pretrained = SUBFOLDERS["audio"]
        if cfg.text.kind == "t5" and not _is_hub_id(cfg.text.pretrained):
            model.text_encoder.model.save_pretrained(tmp / SUBFOLDERS["text"])
            if model.text_encoder.tokenizer is not None:
                model.text_encoder.tokenizer.save_pretrained(tmp / SUBFOLDERS["text"])
            cfg.text.pretrained = SUBFOLDERS["text"]
        if cfg.text.kind == "learned":
            model.text_encoder.tokenizer.save(str(tmp / "text_tokenizer.json"))
        state = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).detach().cpu().contiguous()
                 for k, v in _trainable(model, state_dict).items()}
        save_file(state, tmp / "model.safetensors", metadata={"format": "pt", "library": "midas"})
        cfg.save(tmp / "config.json")
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            path.rename(old)
            tmp.rename(path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def _trainable(model, state_dict: dict | None) -> dict:
    if state_dict is None:
        return model.trainable_state_dict()
    from midas_cli.model.midas import EXTERNAL_PREFIXES

    return {k: v for k, v in state_dict.items() if not k.startswith(EXTERNAL_PREFIXES)}


# ---- loading --------------------------------------------------------------------------------


def resolve_checkpoint(name_or_path: str | os.PathLike | None, revision: str | None = None) -> Path:
    """A local checkpoint folder for a path, a Hub id (downloaded or cached), or None (the demo)."""
    if name_or_path is None:
        path = demo_checkpoint_path()
        if not (path / "config.json").exists():
            raise MidasError("the demo checkpoint is not shipped in this install yet; pass --checkpoint DIR_OR_HUB_ID")
        return path
    local = Path(name_or_path).expanduser()
    if local.exists():
        if not local.is_dir() or not (local / "config.json").exists():
            raise MidasError(f"{name_or_path}: not a checkpoint folder (no config.json)")
        return local
    if not _is_hub_id(str(name_or_path)):
        raise MidasError(f"{name_or_path}: no such checkpoint folder")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled

    try:
        path = Path(snapshot_download(str(name_or_path), revision=revision, allow_patterns=CHECKPOINT_FILES))
    except (LocalEntryNotFoundError, OfflineModeIsEnabled):
        raise MidasError(f"{name_or_path}: not a local folder and not in the Hugging Face cache "
                         "(offline, or the Hub cannot be reached); run `midas download " + str(name_or_path) + "` where the Hub is reachable") from None
    except HfHubHTTPError as e:
        raise MidasError(f"{name_or_path}: cannot fetch from the Hugging Face Hub ({str(e).splitlines()[0]})") from None
    if not (path / "config.json").exists():
        raise MidasError(f"{name_or_path}: the repository has no config.json; not a MIDAS checkpoint")
    return path


def _component_source(ckpt_dir: Path, ref: str | None) -> str | None:
    if ref is None:
        return None
    if (ckpt_dir / ref).is_dir():
        return str(ckpt_dir / ref)
    return ref


def checkpoint_autoencoder(cfg: MidasConfig, checkpoint: str):
    """A checkpoint's autoencoder (its `autoencoder/` folder) as a FrameAutoencoder for `cfg`,
    e.g. to share one autoencoder across training runs (`autoencoder.init_from`)."""
    from midas_cli.model.autoencoder import FrameAutoencoder, build_dcae

    src = resolve_checkpoint(checkpoint) / SUBFOLDERS["autoencoder"]
    if not src.is_dir():
        raise MidasError(f"autoencoder.init_from: {src} is not an autoencoder folder")
    return FrameAutoencoder(build_dcae(cfg.autoencoder, str(src)), cfg.autoencoder.patch_size)


def build_model(cfg: MidasConfig, ckpt_dir: Path | None = None, tokenizer=None, load_pretrained: bool = True):
    """A MidasModel whose external components come from their folders / Hub ids when given."""
    from midas_cli.conditions.audio import build_audio_features
    from midas_cli.conditions.text import build_text_encoder
    from midas_cli.model.autoencoder import FrameAutoencoder, build_dcae
    from midas_cli.model.midas import MidasModel

    base = ckpt_dir or Path(".")
    comps = {}
    if load_pretrained:
        ae_src = _component_source(base, cfg.autoencoder.pretrained)
        if ae_src is not None:
            comps["autoencoder"] = FrameAutoencoder(build_dcae(cfg.autoencoder, ae_src), cfg.autoencoder.patch_size)
        if cfg.audio.kind == "whisper" and cfg.audio.pretrained:
            comps["audio_features"] = build_audio_features(cfg.audio, _component_source(base, cfg.audio.pretrained))
        if cfg.text.kind == "t5" and cfg.text.pretrained:
            comps["text_encoder"] = build_text_encoder(cfg.text, None, _component_source(base, cfg.text.pretrained))
    model = MidasModel(cfg, tokenizer=tokenizer, components=comps)
    if load_pretrained and cfg.backbone.pretrained and ckpt_dir is None:
        model.backbone.load_pretrained(cfg.backbone.pretrained)
    return model


def _load_tokenizer(ckpt: Path):
    from tokenizers import Tokenizer

    from midas_cli.model.weights import HINT, read_json_object

    tok_path = ckpt / "text_tokenizer.json"
    if not tok_path.exists():
        raise MidasError(f"{ckpt}: text_tokenizer.json is missing")
    read_json_object(tok_path)  # binary garbage or a truncated file: named as such
    try:
        return Tokenizer.from_file(str(tok_path))
    except Exception as e:  # tokenizers raises a bare Exception
        why = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise MidasError(f"{tok_path}: not a tokenizers file ({why}); {HINT}") from None


def _check_model_weights(weights: Path, model, against: str = "config.json", allow_new: bool = False,
                         allow_resized: bool = False) -> list[str]:
    """model.safetensors (header only) against the model's trainable tensors: names and shapes.
    With `allow_new` the model may have tensors the file lacks, with `allow_resized` tensors of
    another shape; the names of both are returned."""
    from midas_cli.model.weights import check_shapes, safetensors_shapes

    found = safetensors_shapes(weights)
    expected = {k: tuple(v.shape) for k, v in model.trainable_state_dict().items()}
    new = sorted(set(expected) - set(found)) if allow_new else []
    resized = sorted(k for k in expected if k in found and tuple(found[k]) != expected[k]) if allow_resized else []
    kept = set(new) | set(resized)
    check_shapes(weights, {k: v for k, v in found.items() if k not in resized},
                 {k: v for k, v in expected.items() if k not in kept}, against)
    return sorted(kept)


def load_trainable_weights(model, weights: Path, against: str = "config.json", allow_new: bool = False,
                           allow_resized: bool = False) -> list[str]:
    """model.safetensors into the model's trainable tensors, the header checked first; a corrupt or
    mismatched file is a MidasError naming it.

    allow_new: the model may have tensors the file lacks (a module a fine-tuning recipe adds,
    such as `reference_in_slots`); they keep their initialisation and their names are returned.
    allow_resized: so may tensors whose shape differs (the latent's in- and output layers, when a
    model moves to an autoencoder with more latent channels).
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from midas_cli.model.weights import HINT, reason

    new = _check_model_weights(weights, model, against, allow_new, allow_resized)
    try:
        state = load_file(weights)
        model.load_state_dict({k: v.float() for k, v in state.items() if k not in new}, strict=False)
    except (SafetensorError, RuntimeError, ValueError, OSError) as e:  # the header was sound; the data is not
        raise MidasError(f"{weights}: cannot load the weights ({reason(e)}); {HINT}") from None
    return new


def load_model(name_or_path: str | os.PathLike | None = None, device: str | torch.device = "cpu",
               dtype: torch.dtype = torch.float32, revision: str | None = None):
    """Load a checkpoint (folder, Hub id, or None for the shipped demo) ready for inference.

    Every file is checked as it is read: a corrupt, truncated or foreign one is a MidasError naming it.
    """
    ckpt = resolve_checkpoint(name_or_path, revision)
    cfg = MidasConfig.load(ckpt / "config.json")
    tokenizer = _load_tokenizer(ckpt) if cfg.text.kind == "learned" else None
    weights = ckpt / "model.safetensors"
    if not weights.exists():
        raise MidasError(f"{ckpt}: model.safetensors is missing")
    try:
        model = build_model(cfg, ckpt, tokenizer)
    except OSError as e:
        raise MidasError(f"{ckpt}: cannot load a model component ({str(e).splitlines()[0]})") from None
    load_trainable_weights(model, weights)
    model.checkpoint_path = ckpt
    return model.to(device=device, dtype=dtype).eval()


def verify_checkpoint(ckpt: Path, cfg: MidasConfig) -> None:
    """Check a checkpoint's files without loading any tensor (headers, configs, tokenizer), as
    `load_model` would read them; files that are absent are left to the command that needs them."""
    from midas_cli.model.autoencoder import check_dcae_folder
    from midas_cli.model.weights import check_hf_folder

    if cfg.text.kind == "learned" and (ckpt / "text_tokenizer.json").exists():
        _load_tokenizer(ckpt)
    for ref, kind, what in ((cfg.autoencoder.pretrained, None, "autoencoder"),
                            (cfg.audio.pretrained, cfg.audio.kind == "whisper", "Whisper audio encoder"),
                            (cfg.text.pretrained, cfg.text.kind == "t5", "T5 text encoder")):
        src = _component_source(ckpt, ref)
        if src is None or kind is False or not Path(src).is_dir():
            continue
        if what == "autoencoder":
            check_dcae_folder(src)
        else:
            check_hf_folder(src, what)
    weights = ckpt / "model.safetensors"
    if weights.exists():
        with torch.device("meta"):
            model = build_model(cfg, ckpt, load_pretrained=False)
        _check_model_weights(weights, model)


def config_or_checkpoint(name: str | None) -> tuple[MidasConfig, Path | None]:
    """`tiny`/`demo`/`paper` → preset config; anything else → a checkpoint's config and folder (its files
    checked by `verify_checkpoint`, so `midas info` on a corrupt checkpoint says which file is bad)."""
    from midas_cli.model.config import PRESETS

    if name in PRESETS:
        return preset(name), None
    ckpt = resolve_checkpoint(name)
    cfg = MidasConfig.load(ckpt / "config.json")
    verify_checkpoint(ckpt, cfg)
    return cfg, ckpt
