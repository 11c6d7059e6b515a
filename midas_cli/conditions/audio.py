"""Audio → one feature vector per video frame, using only audio up to that frame's end.

Two encoders share one call signature, `features(audio, n_frames, start_frame=0)`, where
`audio` is the waveform from the start of the clip (16 kHz mono, at least up to the end of the
requested frames; shorter is zero-padded), so live audio can be fed as it arrives:

- `LogMelFeatures` (librosa, no weights): a causal log-mel spectrogram, 10 ms hop, each mel
  column ending at its hop; a video frame (80 ms) gets its 8 columns stacked. No look-ahead.
- `WhisperFeatures` (transformers Whisper encoder, frozen): the encoder runs on a window of
  audio that ends at the end of the chunk being generated; the 4 encoder positions (20 ms
  each) of a frame are averaged. Look-ahead: up to the end of the frame's chunk (≤ 440 ms),
  which the backbone sees anyway, since a chunk's conditions precede its frames.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from midas_cli.model.config import FPS, SAMPLE_RATE, AudioConfig

HOP = 160  # 10 ms
N_FFT = 400  # 25 ms
SAMPLES_PER_FRAME = int(SAMPLE_RATE / FPS)  # 1280
COLS_PER_FRAME = SAMPLES_PER_FRAME // HOP  # 8


def _window(audio: np.ndarray, start: int, stop: int) -> np.ndarray:
    """audio[start:stop] with zeros where the range falls outside the signal."""
    out = np.zeros(stop - start, dtype=np.float32)
    a, b = max(start, 0), min(stop, len(audio))
    if b > a:
        out[a - start:b - start] = audio[a:b]
    return out


class LogMelFeatures(nn.Module):
    """Causal log-mel features, `8 * n_mels` per video frame."""

    def __init__(self, n_mels: int = 40):
        super().__init__()
        import librosa

        self.n_mels = n_mels
        self.dim = COLS_PER_FRAME * n_mels
        self.register_buffer("mel_basis", torch.from_numpy(
            librosa.filters.mel(sr=SAMPLE_RATE, n_fft=N_FFT, n_mels=n_mels).astype(np.float32)), persistent=False)
        self.register_buffer("window", torch.hann_window(N_FFT), persistent=False)

    @torch.no_grad()
    def forward(self, audio: np.ndarray, n_frames: int, start_frame: int = 0) -> torch.Tensor:
        # Column i covers [i*HOP - (N_FFT-HOP), (i+1)*HOP): it ends where its hop ends.
        start = start_frame * SAMPLES_PER_FRAME - (N_FFT - HOP)
        stop = (start_frame + n_frames) * SAMPLES_PER_FRAME
        y = torch.from_numpy(_window(np.asarray(audio, dtype=np.float32), start, stop))
        frames = y.unfold(0, N_FFT, HOP)  # (n_frames*8, N_FFT)
        spec = torch.fft.rfft(frames * self.window.cpu(), dim=-1).abs() ** 2  # (cols, N_FFT//2+1)
        mel = spec @ self.mel_basis.cpu().T  # (cols, n_mels)
        logmel = (torch.log10(mel.clamp_min(1e-10)) + 4.0) / 4.0  # Whisper-like scaling to ~[-1.5, 1]
        return logmel.reshape(n_frames, self.dim).to(self.mel_basis.device)


class WhisperFeatures(nn.Module):
    """A frozen Whisper encoder, pooled to one `d_model` vector per video frame."""

    def __init__(self, encoder: nn.Module):
        super().__init__()
        from transformers import WhisperFeatureExtractor

        self.encoder = encoder.eval().requires_grad_(False)
        cfg = encoder.config
        self.dim = cfg.d_model
        self.window_samples = 2 * cfg.max_source_positions * HOP  # what the encoder's positions cover
        self.extractor = WhisperFeatureExtractor(feature_size=cfg.num_mel_bins, sampling_rate=SAMPLE_RATE,
                                                 chunk_length=self.window_samples / SAMPLE_RATE)
        self.extractor.n_samples = self.window_samples
        self.extractor.nb_max_frames = self.window_samples // HOP

    @torch.no_grad()
    def forward(self, audio: np.ndarray, n_frames: int, start_frame: int = 0, frames_per_chunk: int = 6) -> torch.Tensor:
        audio = np.asarray(audio, dtype=np.float32)
        out = []
        first_chunk = start_frame // frames_per_chunk
        last_chunk = (start_frame + n_frames - 1) // frames_per_chunk
        for c in range(first_chunk, last_chunk + 1):
            end = (c + 1) * frames_per_chunk * SAMPLES_PER_FRAME
            wav = _window(audio, end - self.window_samples, end)
            mel = self.extractor(wav, sampling_rate=SAMPLE_RATE, return_tensors="pt").input_features
            p = next(self.encoder.parameters())
            hidden = self.encoder(mel.to(p.device, p.dtype)).last_hidden_state[0]  # (P, D), 20 ms each
            per_frame = hidden[-4 * frames_per_chunk:].reshape(frames_per_chunk, 4, -1).mean(1)
            out.append(per_frame.float())
        feats = torch.cat(out)
        offset = start_frame - first_chunk * frames_per_chunk
        return feats[offset:offset + n_frames]


def build_audio_features(cfg: AudioConfig, pretrained_path: str | None = None) -> nn.Module:
    if cfg.kind == "logmel":
        return LogMelFeatures(cfg.n_mels)
    from transformers import WhisperConfig, WhisperModel
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    if pretrained_path is None:
        return WhisperFeatures(WhisperEncoder(WhisperConfig(**_whisper_defaults(cfg.architecture))))
    from midas_cli.errors import MidasError
    from midas_cli.model.weights import HINT, check_hf_folder, check_loading_info, quiet_hf_logs, reason

    check_hf_folder(pretrained_path, "Whisper audio encoder")  # a corrupt local folder names its file
    try:
        with quiet_hf_logs():
            if _is_encoder_only(pretrained_path):  # a folder we saved holds the encoder alone
                encoder, info = WhisperEncoder.from_pretrained(pretrained_path, dtype=torch.float32,
                                                               output_loading_info=True)
                prefix = ""
            else:  # a whole Whisper model (a Hub id or its folder): keep its encoder
                whole, info = WhisperModel.from_pretrained(pretrained_path, dtype=torch.float32,
                                                           output_loading_info=True)
                encoder, prefix = whole.get_encoder(), "encoder."
    except Exception as e:
        raise MidasError(f"{pretrained_path}: cannot load the Whisper audio encoder ({reason(e)}); {HINT}") from e
    if encoder.config.model_type != "whisper":
        raise MidasError(f"{pretrained_path}: not a Whisper model (model_type {encoder.config.model_type!r})")
    check_loading_info(info, pretrained_path, "Whisper audio encoder", prefix)
    return WhisperFeatures(encoder)


def _is_encoder_only(path: str) -> bool:
    import json
    from pathlib import Path

    cfg = Path(path) / "config.json"
    return cfg.exists() and "WhisperEncoder" in (json.loads(cfg.read_text()).get("architectures") or [""])[0]


def _whisper_defaults(arch: dict) -> dict:
    # special tokens must lie inside a tiny vocabulary or WhisperModel refuses to build
    d = dict(pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1)
    d.update(arch)
    return d


def audio_feature_dim(cfg: AudioConfig) -> int:
    if cfg.kind == "logmel":
        return COLS_PER_FRAME * cfg.n_mels
    return int(cfg.architecture.get("d_model", 768))
