"""Condition encoders: causal audio features, Whisper and T5 through save/load, pose velocities."""

import json

import numpy as np
import pytest
import torch

from midas_cli.conditions.audio import SAMPLES_PER_FRAME, LogMelFeatures
from midas_cli.conditions.pose import pose_features
from midas_cli.model.config import preset

WHISPER_TINY = dict(num_mel_bins=80, d_model=32, encoder_layers=2, encoder_attention_heads=4, decoder_layers=1,
                    decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, max_source_positions=100,
                    max_target_positions=32, vocab_size=100)
T5_TINY = dict(vocab_size=64, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
               relative_attention_num_buckets=8, relative_attention_max_distance=16)


def _speech(seconds, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(0, 0.1, int(seconds * 16000)).astype(np.float32)


def test_logmel_uses_no_future_audio():
    feats = LogMelFeatures(16)
    audio = _speech(2.0)
    base = feats(audio, 20)
    changed = audio.copy()
    changed[10 * SAMPLES_PER_FRAME:] = 0.5  # everything from frame 10 on
    out = feats(changed, 20)
    assert torch.equal(out[:10], base[:10])
    assert not torch.allclose(out[10], base[10])


def test_logmel_in_chunks_equals_whole_clip():
    feats = LogMelFeatures(16)
    audio = _speech(2.0, seed=1)
    whole = feats(audio, 24)
    pieces = torch.cat([feats(audio[: (c + 1) * 6 * SAMPLES_PER_FRAME], 6, c * 6) for c in range(4)])
    assert torch.allclose(whole, pieces, atol=1e-6)


def test_pose_features_are_velocities_and_positions():
    pose = np.zeros((4, 6), np.float32)
    pose[2:, 0] = 15.0  # yaw steps at frame 2
    f = pose_features(pose)
    assert f.shape == (4, 12)
    assert f[2, 0] > 0 and f[3, 0] == 0  # moving at the step, still afterwards
    assert f[3, 6] == pytest.approx(0.5)  # absolute yaw 15° / 30°


def _tiny_whisper_t5_model():
    from transformers import PreTrainedTokenizerFast

    from midas_cli.conditions.text import build_word_tokenizer
    from midas_cli.model.checkpoint import build_model

    cfg = preset("tiny")
    cfg.audio.kind, cfg.audio.architecture = "whisper", dict(WHISPER_TINY)
    cfg.text.kind, cfg.text.architecture = "t5", dict(T5_TINY)
    torch.manual_seed(0)
    model = build_model(cfg, load_pretrained=False).eval()
    tok = PreTrainedTokenizerFast(tokenizer_object=build_word_tokenizer(["she smiles", "a calm face"], 64),
                                  unk_token="[UNK]", pad_token="[UNK]")
    model.text_encoder.tokenizer = tok
    return model


def test_whisper_and_t5_encoders_save_and_load(tmp_path):
    from midas_cli.model.checkpoint import load_model, save_checkpoint

    model = _tiny_whisper_t5_model()
    audio = _speech(3.0)
    feats = model.audio_features(audio, 12)
    assert feats.shape == (12, 32)
    # chunk-level causality: audio after chunk 0's end does not change chunk 0
    changed = audio.copy()
    changed[6 * SAMPLES_PER_FRAME:] = 0.3
    assert torch.allclose(model.audio_features(changed, 6), feats[:6], atol=1e-5)
    texts = model.encode_texts(["she smiles", "", "a calm face"])
    assert texts.shape == (3, 32) and torch.equal(texts[1], torch.zeros(32))

    path = save_checkpoint(model, tmp_path / "ckpt")
    assert (path / "audio_encoder" / "config.json").exists() and (path / "text_encoder" / "config.json").exists()
    cfg = json.loads((path / "config.json").read_text())
    assert cfg["audio"]["pretrained"] == "audio_encoder" and cfg["text"]["pretrained"] == "text_encoder"
    loaded = load_model(path)
    assert torch.allclose(loaded.audio_features(audio, 12), feats, atol=1e-6)
    assert torch.allclose(loaded.encode_texts(["she smiles", "", "a calm face"]), texts, atol=1e-6)
