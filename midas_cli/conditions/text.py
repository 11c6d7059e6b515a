"""Text prompts → one vector per chunk.

- `LearnedTextEncoder`: a word-level tokenizer (the `tokenizers` library, saved in the
  checkpoint as `text_tokenizer.json`) and a small trainable embedding, mean-pooled.
- `T5TextEncoder`: a frozen transformers `T5EncoderModel`, mean-pooled over real tokens.
The empty prompt ("") maps to the zero vector in both: "no instruction".
"""

from __future__ import annotations

import torch
from torch import nn

from midas_cli.model.config import TextConfig

UNK = "[UNK]"


def build_word_tokenizer(texts, vocab_size: int = 512):
    """A lowercase word-level tokenizer fitted on `texts` (unknown words → [UNK])."""
    from tokenizers import Tokenizer, normalizers, pre_tokenizers
    from tokenizers.models import WordLevel
    from tokenizers.trainers import WordLevelTrainer

    tok = Tokenizer(WordLevel(unk_token=UNK))
    tok.normalizer = normalizers.Sequence([normalizers.NFD(), normalizers.StripAccents(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(list(texts), WordLevelTrainer(vocab_size=vocab_size, special_tokens=[UNK]))
    return tok


class LearnedTextEncoder(nn.Module):
    def __init__(self, cfg: TextConfig, tokenizer=None):
        super().__init__()
        self.tokenizer = tokenizer if tokenizer is not None else build_word_tokenizer([], cfg.vocab_size)
        self.dim = cfg.dim
        self.embedding = nn.Embedding(cfg.vocab_size, cfg.dim)
        nn.init.normal_(self.embedding.weight, std=0.5)

    def forward(self, texts: list[str]) -> torch.Tensor:
        out = torch.zeros(len(texts), self.dim, device=self.embedding.weight.device, dtype=self.embedding.weight.dtype)
        for i, text in enumerate(texts):
            ids = [j for j in self.tokenizer.encode(text).ids if j < self.embedding.num_embeddings]
            if ids:
                out[i] = self.embedding(torch.tensor(ids, device=out.device)).mean(0)
        return out


class T5TextEncoder(nn.Module):
    def __init__(self, model: nn.Module, tokenizer):
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.dim = model.config.d_model

    @torch.no_grad()
    def forward(self, texts: list[str]) -> torch.Tensor:
        p = next(self.model.parameters())
        out = torch.zeros(len(texts), self.dim, device=p.device, dtype=torch.float32)
        nonempty = [i for i, t in enumerate(texts) if t.strip()]
        if nonempty:
            batch = self.tokenizer([texts[i] for i in nonempty], return_tensors="pt", padding=True)
            mask = batch["attention_mask"].to(p.device)
            hidden = self.model(input_ids=batch["input_ids"].to(p.device), attention_mask=mask).last_hidden_state
            pooled = (hidden.float() * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp_min(1)
            out[nonempty] = pooled
        return out


def build_text_encoder(cfg: TextConfig, tokenizer=None, pretrained_path: str | None = None) -> nn.Module:
    if cfg.kind == "learned":
        return LearnedTextEncoder(cfg, tokenizer)
    from transformers import AutoTokenizer, T5Config, T5EncoderModel

    if pretrained_path is None:  # random weights: tests and meta-device counting
        arch = dict(is_encoder_decoder=False, use_cache=False)
        arch.update(cfg.architecture)
        model = T5EncoderModel(T5Config(**arch))
        return T5TextEncoder(model, tokenizer)
    from midas_cli.errors import MidasError
    from midas_cli.model.weights import HINT, check_hf_folder, check_loading_info, quiet_hf_logs, reason

    check_hf_folder(pretrained_path, "T5 text encoder")  # a corrupt local folder names its file
    try:
        with quiet_hf_logs():
            model, info = T5EncoderModel.from_pretrained(pretrained_path, dtype=torch.float32, output_loading_info=True)
    except Exception as e:
        raise MidasError(f"{pretrained_path}: cannot load the T5 text encoder ({reason(e)}); {HINT}") from e
    check_loading_info(info, pretrained_path, "T5 text encoder")
    if tokenizer is None:
        try:
            with quiet_hf_logs():
                tokenizer = AutoTokenizer.from_pretrained(pretrained_path)
        except Exception as e:
            raise MidasError(f"{pretrained_path}: cannot load the T5 tokenizer ({reason(e)}); {HINT}") from e
    return T5TextEncoder(model, tokenizer)


def text_feature_dim(cfg: TextConfig) -> int:
    return cfg.dim if cfg.kind == "learned" else int(cfg.architecture.get("d_model", 768))
