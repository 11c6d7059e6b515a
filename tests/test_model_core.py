"""The model's contracts: causality, cache = recomputation, save/load, learning, noise."""

import copy

import pytest
import torch

from midas_cli.engine.streaming import StreamingEngine, reference_window_hidden
from midas_cli.errors import MidasError
from midas_cli.model.checkpoint import load_model, save_checkpoint
from midas_cli.model.config import preset
from midas_cli.model.mask import SequenceLayout, chunk_causal_mask
from midas_cli.model.midas import MidasModel

from helpers import random_features, random_latents

K = 3  # chunks in a test sequence


def _slot_outputs(model, ref, context, feats, buckets=None):
    b, t = context.shape[:2]
    buckets = torch.zeros(b, t, dtype=torch.long) if buckets is None else buckets
    return model.slot_hidden(ref, context, feats, buckets)  # (B, T, N, H)


@pytest.fixture
def sequence(tiny_model):
    f = tiny_model.cfg.frames_per_chunk
    ref = random_latents(tiny_model, 1, 1, seed=5)[:, 0]
    return ref, random_latents(tiny_model, 1, K * f), random_features(tiny_model, 1, K)


def test_mask_is_block_causal():
    layout = SequenceLayout(tokens_per_frame=2, cond_tokens=3, frames_per_chunk=2, num_chunks=2)
    allowed = chunk_causal_mask(layout)[0, 0] == 0
    slots = layout.frame_slot_index()
    # first slot token sees its frame partner (full attention inside a frame) ...
    assert allowed[slots[0], slots[1]] and allowed[slots[1], slots[0]]
    # ... but not the next frame, and no condition token sees a later one
    assert not allowed[slots[1], slots[2]]
    cond = layout.cond_index()
    assert not allowed[cond[0], cond[3]] and allowed[cond[3], cond[0]]
    assert allowed[:, :2].all()  # everyone sees the reference
    assert not allowed[:2, 2:].any()  # the reference sees nothing after it


@pytest.mark.parametrize("modality", ["audio", "pose", "text", "listen"])
def test_future_conditions_do_not_change_past(tiny_model_both, sequence, modality):
    tiny_model = tiny_model_both
    ref, context, feats = sequence
    base = _slot_outputs(tiny_model, ref, context, feats)
    changed = copy.deepcopy(feats)
    getattr(changed, modality)[:, 1] += 3.0  # chunk 1's condition
    out = _slot_outputs(tiny_model, ref, context, changed)
    f = tiny_model.cfg.frames_per_chunk
    assert torch.allclose(out[:, :f], base[:, :f], atol=1e-6)  # chunk 0 untouched
    assert not torch.allclose(out[:, f:2 * f], base[:, f:2 * f], atol=1e-3)  # chunk 1 reacts


def test_future_frames_do_not_change_past(tiny_model, sequence):
    ref, context, feats = sequence
    base = _slot_outputs(tiny_model, ref, context, feats)
    for t in (1, 7, 12):
        changed = context.clone()
        changed[:, t] += 2.0  # the input of slot t (= frame t-1)
        out = _slot_outputs(tiny_model, ref, changed, feats)
        assert torch.allclose(out[:, :t], base[:, :t], atol=1e-6), f"slot {t} leaked into the past"
        assert not torch.allclose(out[:, t], base[:, t], atol=1e-3)


def test_tokens_of_one_frame_see_each_other(tiny_model, sequence):
    ref, context, feats = sequence
    base = _slot_outputs(tiny_model, ref, context, feats)
    changed = context.clone()
    changed[:, 4, -1] += 2.0  # last token of slot 4
    out = _slot_outputs(tiny_model, ref, changed, feats)
    assert not torch.allclose(out[:, 4, 0], base[:, 4, 0], atol=1e-4)  # first token of the same slot changed


def test_eager_and_sdpa_give_the_same_outputs(sequence):
    ref, context, feats = sequence
    outs = []
    for impl in ("eager", "sdpa"):
        cfg = preset("tiny")
        cfg.backbone.attn_implementation = impl
        torch.manual_seed(0)
        model = MidasModel(cfg).eval()
        outs.append(_slot_outputs(model, ref, context, feats))
    assert torch.allclose(outs[0], outs[1], atol=1e-5)


def _run_engine(model, chunks, window, seed=0):
    f = model.cfg.frames_per_chunk
    feats = random_features(model, 1, chunks, seed=seed)
    ref = random_latents(model, 1, 1, seed=9)[:, 0]
    engine = StreamingEngine(model, window_chunks=window, context_sigma=0.2, seed=seed, record_hidden=True)
    frames = torch.cat(list(engine.stream(ref, [feats.chunk(k) for k in range(chunks)])), dim=1)
    hidden = torch.stack(engine.hidden_trace, dim=1)  # (B, chunks*F, N, H)
    contexts = torch.stack(engine.context_trace, dim=1).reshape(1, chunks, f, *hidden.shape[2:])
    return engine, ref, feats, frames, hidden, contexts


@pytest.mark.parametrize("window", [1, 2])
def test_streaming_cache_equals_recomputing_the_window(tiny_model_both, window):
    tiny_model = tiny_model_both
    chunks = 5  # several evictions
    engine, ref, feats, frames, hidden, contexts = _run_engine(tiny_model, chunks, window)
    assert frames.shape == (1, chunks * 6, 16, 8)
    expected = reference_window_hidden(tiny_model, ref, [feats.chunk(k) for k in range(chunks)],
                                       [contexts[:, k] for k in range(chunks)], window)
    assert torch.allclose(hidden, expected, atol=1e-4), (hidden - expected).abs().max()
    # the cache stays bounded: reference + window chunks
    n, per_chunk = tiny_model.cfg.tokens_per_frame, tiny_model.cfg.tokens_per_chunk
    assert engine.get_pos() == n + min(chunks, window + 1) * per_chunk


def test_streaming_equals_the_teacher_forced_forward_before_eviction(tiny_model_both):
    """With no eviction and clean context, streaming is exactly the training forward pass."""
    tiny_model = tiny_model_both
    chunks, f = 2, tiny_model.cfg.frames_per_chunk
    feats = random_features(tiny_model, 1, chunks)
    ref = random_latents(tiny_model, 1, 1, seed=9)[:, 0]
    engine = StreamingEngine(tiny_model, window_chunks=4, context_sigma=0.0, seed=0, record_hidden=True)
    frames = torch.cat(list(engine.stream(ref, [feats.chunk(k) for k in range(chunks)])), dim=1)
    previous = torch.cat([ref[:, None], frames[:, :-1]], dim=1)
    full = tiny_model.slot_hidden(ref, previous, feats, torch.zeros(1, chunks * f, dtype=torch.long))
    assert torch.allclose(torch.stack(engine.hidden_trace, dim=1), full, atol=1e-4)


def test_streaming_is_deterministic_per_seed(tiny_model):
    a = _run_engine(tiny_model, 2, 1, seed=3)[3]
    b = _run_engine(tiny_model, 2, 1, seed=3)[3]
    c = _run_engine(tiny_model, 2, 1, seed=4)[3]
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_save_then_load_gives_identical_outputs(tiny_model_both, tmp_path, sequence):
    from midas_cli.conditions.text import build_word_tokenizer

    tiny_model = tiny_model_both

    tiny_model.text_encoder.tokenizer = build_word_tokenizer(["she smiles warmly", "a calm face"], 128)
    ref, context, feats = sequence
    path = save_checkpoint(tiny_model, tmp_path / "ckpt")
    assert {p.name for p in path.iterdir()} >= {"config.json", "model.safetensors", "autoencoder", "text_tokenizer.json"}
    loaded = load_model(path)
    assert torch.equal(_slot_outputs(tiny_model, ref, context, feats), _slot_outputs(loaded, ref, context, feats))
    img = torch.rand(1, 3, 64, 64) * 2 - 1
    assert torch.equal(tiny_model.autoencoder.encode(img), loaded.autoencoder.encode(img))
    assert torch.equal(tiny_model.encode_texts(["she smiles"]), loaded.encode_texts(["she smiles"]))
    assert not torch.equal(loaded.encode_texts(["she smiles"]), loaded.encode_texts(["a calm face"]))


def test_load_through_the_hub_code_path_offline(tiny_model, tmp_path, sequence):
    """A Hub id resolves from the local cache with HF_HUB_OFFLINE=1 (no network)."""
    import huggingface_hub.constants as c

    ref, context, feats = sequence
    src = save_checkpoint(tiny_model, tmp_path / "src")
    repo = tmp_path / "hub" / "models--someorg--midas-tiny"
    sha = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(sha)
    import shutil

    shutil.copytree(src, repo / "snapshots" / sha)
    old = c.HF_HUB_CACHE
    c.HF_HUB_CACHE = str(tmp_path / "hub")
    try:
        loaded = load_model("someorg/midas-tiny")
    finally:
        c.HF_HUB_CACHE = old
    assert torch.equal(_slot_outputs(tiny_model, ref, context, feats), _slot_outputs(loaded, ref, context, feats))


def test_missing_hub_checkpoint_is_a_clear_error():
    from midas_cli.errors import MidasError

    with pytest.raises(MidasError, match="someorg/nothing-here.*not in the Hugging Face cache"):
        load_model("someorg/nothing-here")


def test_tiny_model_overfits_a_fixed_batch():
    from midas_cli.training.objective import sequence_loss

    torch.manual_seed(0)
    cfg = preset("tiny")
    model = MidasModel(cfg).train()
    f = cfg.frames_per_chunk
    ref = random_latents(model, 2, 1, seed=5)[:, 0]
    frames = random_latents(model, 2, 2 * f, seed=6)
    previous = torch.cat([ref[:, None], frames[:, :-1]], dim=1)
    feats = random_features(model, 2, 2)
    params = [p for n, p in model.named_parameters() if not n.startswith("autoencoder.")]
    opt = torch.optim.AdamW(params, lr=3e-3)
    gen = torch.Generator().manual_seed(0)

    def eval_loss():
        g = torch.Generator().manual_seed(123)
        with torch.no_grad():
            return sum(sequence_loss(model, ref, frames, previous, feats, g).item() for _ in range(4)) / 4

    first = eval_loss()
    for _ in range(300):
        loss = sequence_loss(model, ref, frames, previous, feats, gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
    last = eval_loss()
    assert last < first / 5, (first, last)


def test_zero_noise_is_exactly_the_clean_path(tiny_model):
    x = random_latents(tiny_model, 2, 3)
    zero = torch.zeros(2, 3, dtype=torch.long)
    assert tiny_model.noise.corrupt(x, zero) is x
    noisy = tiny_model.noise.corrupt(x, torch.full((2, 3), 19))
    assert (noisy - x).std() > 0.3  # top bucket is σ = 0.5
    cfg = preset("tiny")
    cfg.noise.sigma_max = 0.0
    off = MidasModel(cfg)
    assert int(off.noise.sample_buckets((4, 6), "cpu").max()) == 0


def test_noise_bucket_embedding_reaches_the_model(tiny_model, sequence):
    ref, context, feats = sequence
    t = context.shape[1]
    clean = _slot_outputs(tiny_model, ref, context, feats, torch.zeros(1, t, dtype=torch.long))
    flagged = _slot_outputs(tiny_model, ref, context, feats, torch.full((1, t), 10))
    assert not torch.allclose(clean, flagged, atol=1e-4)


def test_text_encoders_pool_prompts():
    from midas_cli.conditions.text import LearnedTextEncoder, build_word_tokenizer
    from midas_cli.model.config import TextConfig

    enc = LearnedTextEncoder(TextConfig(dim=8, vocab_size=32), build_word_tokenizer(["Smiling warmly", "frown"], 32))
    out = enc(["smiling warmly", "", "FROWN"])
    assert out.shape == (3, 8) and torch.equal(out[1], torch.zeros(8))
    assert not torch.allclose(out[0], out[2])


def test_patched_tokens_are_latent_squares(tmp_path):
    """patch_size 2: a token holds a 2×2 square of latent pixels, and decoding undoes exactly that."""
    cfg = preset("tiny")
    cfg.autoencoder.architecture["encoder_block_out_channels"] = (8, 8, 16, 16)
    cfg.autoencoder.architecture["decoder_block_out_channels"] = (8, 8, 16, 16)
    for key in ("encoder_layers_per_block", "decoder_layers_per_block"):
        cfg.autoencoder.architecture[key] = (1, 1, 1, 1)
    for key in ("encoder_qkv_multiscales", "decoder_qkv_multiscales"):
        cfg.autoencoder.architecture[key] = ((),) * 4
    cfg.autoencoder.architecture["encoder_block_types"] = ("ResBlock",) * 4
    cfg.autoencoder.architecture["decoder_block_types"] = ("ResBlock",) * 4
    cfg.autoencoder.patch_size = 2
    cfg.validate()
    torch.manual_seed(0)
    model = MidasModel(cfg).eval()
    assert cfg.spatial_compression == 16 and cfg.latent_grid == (4, 4) and cfg.tokens_per_frame == 16
    assert cfg.latent_channels == 4 * cfg.autoencoder.architecture["latent_channels"]
    img = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        tokens = model.autoencoder.encode(img)
        latent = model.autoencoder.dcae.encode(img, return_dict=False)[0] * model.autoencoder.scaling_factor
        assert tokens.shape == (2, 16, cfg.latent_channels)
        # token (row 0, col 1) holds latent pixels rows 0-1, cols 2-3
        square = latent[0, :, 0:2, 2:4]  # (C, 2, 2)
        assert torch.allclose(tokens[0, 1].view(-1, 2, 2), square)
        direct = model.autoencoder.dcae.decode(latent / model.autoencoder.scaling_factor, return_dict=False)[0]
        assert torch.allclose(model.autoencoder.decode(tokens, cfg.latent_grid), direct, atol=1e-6)
        loaded = load_model(save_checkpoint(model, tmp_path / "patched"))
        assert loaded.cfg.autoencoder.patch_size == 2
        assert torch.equal(loaded.autoencoder.encode(img), tokens)


@pytest.mark.parametrize("shift", [1.0, 3.0])
def test_batched_head_sampler_equals_stepping_the_head(shift):
    """The head's sampler precomputes time-only work; sampling must match calling forward per step."""
    from midas_cli.model.config import HeadConfig
    from midas_cli.model.diffusion_head import DiffusionHead
    from midas_cli.model.flow import euler_sample, time_grid

    torch.manual_seed(0)
    head = DiffusionHead(HeadConfig(width=32, depth=2, num_heads=4), 8, 24, 6).eval()
    with torch.no_grad():  # adaLN-Zero starts every gate at zero: give the time a real effect
        for p in head.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    cond, noise = torch.randn(3, 6, 24), torch.randn(3, 6, 8)
    ts = time_grid(4, shift)
    x = noise
    with torch.no_grad():
        for i in range(4):
            x = x + (ts[i + 1] - ts[i]) * head(x, ts[i].expand(3), cond)
    fast = euler_sample(head, cond, noise, 4, shift)
    torch.testing.assert_close(fast, x, atol=1e-5, rtol=1e-5)
    assert (fast - noise).abs().mean() > 0.1


def test_read_only_frames_convert_without_a_warning():
    import warnings

    import numpy as np

    from midas_cli.model.autoencoder import images_to_tensor

    raw = bytes(range(256)) * (2 * 4 * 4 * 3 // 256 + 1)
    frames = np.frombuffer(raw[:2 * 4 * 4 * 3], dtype=np.uint8).reshape(2, 4, 4, 3)  # read-only, as from ffmpeg
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        x = images_to_tensor(frames)
    assert x.shape == (2, 3, 4, 4)
    assert torch.equal(x, images_to_tensor(frames.copy()))


def test_frame_conditions_reach_only_their_own_slot_input(tiny_model_both, sequence):
    """Per-frame path: frame j's audio changes slot j's input embedding and no other slot's."""
    model = tiny_model_both
    ref, context, feats = sequence
    f = model.cfg.frames_per_chunk
    per_frame = model.embed_frame_conditions(feats)
    if not model.cfg.frame_conditions:
        assert per_frame is None and model.projector.frame_mix is None
        return
    assert per_frame.shape == (1, K, f, model.cfg.backbone.hidden_size)
    changed = copy.deepcopy(feats)
    changed.audio[:, 1, 2] += 3.0  # chunk 1, frame 2
    diff = (model.embed_frame_conditions(changed) - per_frame).abs().amax(dim=-1)[0]  # (K, F)
    assert diff[1, 2] > 1e-3
    diff[1, 2] = 0
    assert diff.max() == 0


def test_text_in_slots_starts_as_the_model_without_it_and_reaches_only_its_chunk(sequence):
    """Zero-initialised, the per-frame text path leaves a model's outputs as they were; given
    weights, a chunk's text moves the slot inputs of that chunk's frames and of no other."""
    from conftest import _tiny_model

    plain, with_text = _tiny_model(True, False), _tiny_model(True, False, True)
    missing, unexpected = with_text.load_state_dict(plain.state_dict(), strict=False)
    assert sorted(missing) == ["projector.text_frame.bias", "projector.text_frame.weight"] and not unexpected
    ref, context, feats = sequence
    buckets = torch.zeros(context.shape[:2], dtype=torch.long)
    torch.nn.init.zeros_(with_text.projector.text_frame.weight)
    assert torch.allclose(plain.slot_hidden(ref, context, feats, buckets),
                          with_text.slot_hidden(ref, context, feats, buckets), atol=1e-6)
    torch.nn.init.normal_(with_text.projector.text_frame.weight, std=0.1)
    per_frame = with_text.embed_frame_conditions(feats)
    changed = copy.deepcopy(feats)
    changed.text[:, 1] += 1.0
    diff = (with_text.embed_frame_conditions(changed) - per_frame).abs().amax(dim=-1)[0]  # (K, F)
    assert diff[1].min() > 1e-4  # every frame of chunk 1
    diff[1] = 0
    assert diff.max() == 0
    cfg = copy.deepcopy(plain.cfg)
    cfg.frame_conditions, cfg.text_in_slots = False, True
    with pytest.raises(MidasError, match="text_in_slots: needs frame_conditions"):
        cfg.validate()


def test_reference_in_slots_starts_as_the_model_without_it(sequence):
    """Zero-initialised, the reference path leaves a model's outputs as they were, so a checkpoint
    trained without it can be fine-tuned with it; given weights, the reference reaches every slot."""
    from conftest import _tiny_model

    plain, with_ref = _tiny_model(True, False), _tiny_model(True, True)
    missing, unexpected = with_ref.load_state_dict(plain.state_dict(), strict=False)
    assert sorted(missing) == ["ref_in.bias", "ref_in.weight"] and not unexpected
    ref, context, feats = sequence
    buckets = torch.zeros(context.shape[:2], dtype=torch.long)
    torch.nn.init.zeros_(with_ref.ref_in.weight)
    assert torch.allclose(plain.slot_hidden(ref, context, feats, buckets),
                          with_ref.slot_hidden(ref, context, feats, buckets), atol=1e-6)
    torch.nn.init.normal_(with_ref.ref_in.weight, std=0.1)
    a = with_ref.embed_frames(context, buckets, None, ref)
    b = with_ref.embed_frames(context, buckets, None, ref + 1.0)
    assert (a - b).abs().amax(-1).min() > 0  # every slot of every frame moved


def test_text_in_head_starts_as_the_model_without_it_and_reaches_the_head(sequence):
    """Zero-initialised, the head's text input leaves a rollout exactly as it was, so a checkpoint
    trained without it can be fine-tuned with it; given weights, the text moves every token's
    head condition and `keep` 0 takes it out again."""
    from conftest import _tiny_model

    plain, with_text = _tiny_model(True, True, True), _tiny_model(True, True, True)
    with_text.cfg.text_in_head = True
    with_text.head_text = torch.nn.Linear(plain.projector.text[0].in_features, plain.cfg.backbone.hidden_size)
    torch.nn.init.zeros_(with_text.head_text.weight)
    torch.nn.init.zeros_(with_text.head_text.bias)
    with torch.no_grad():  # a head that moves its sample (a fresh one predicts velocity 0)
        for m in (plain, with_text):
            torch.nn.init.normal_(m.head.final_layer.linear.weight, std=0.5, generator=torch.Generator().manual_seed(0))
    ref, _, feats = sequence
    chunks = [feats.chunk(k) for k in range(K)]
    a = torch.cat(list(StreamingEngine(plain, seed=4).stream(ref, chunks)), dim=1)
    b = torch.cat(list(StreamingEngine(with_text, seed=4).stream(ref, chunks)), dim=1)
    assert torch.equal(a, b)
    torch.nn.init.normal_(with_text.head_text.weight, std=0.1)
    hidden = torch.randn(1, 2, plain.cfg.tokens_per_frame, plain.cfg.backbone.hidden_size)
    text = feats.text[:, :2]
    cond = with_text.head_condition(hidden, text)
    assert (cond - hidden).abs().amax(-1).min() > 0  # every token of both slots
    dropped = with_text.head_condition(hidden, text, keep=torch.tensor([[1.0, 0.0]]))
    assert torch.equal(dropped[:, 1], hidden[:, 1]) and torch.equal(dropped[:, 0], cond[:, 0])
    assert torch.equal(plain.head_condition(hidden, text), hidden)


def test_guidance_at_scale_one_is_the_unguided_sample_and_at_zero_the_text_free_one():
    """euler_sample's guidance: s = 1 is the conditional sample, s = 0 the unconditional one (so
    the batched pass keeps its halves apart), and s = 2 follows v_u + 2·(v_c − v_u) step by step."""
    from midas_cli.model.config import HeadConfig
    from midas_cli.model.diffusion_head import DiffusionHead
    from midas_cli.model.flow import euler_sample, time_grid

    torch.manual_seed(0)
    head = DiffusionHead(HeadConfig(width=32, depth=2, num_heads=4), 8, 24, 6).eval()
    with torch.no_grad():  # adaLN-Zero starts every gate at zero: give the condition a real effect
        for p in head.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    cond, uncond, noise = torch.randn(3, 6, 24), torch.randn(3, 6, 24), torch.randn(3, 6, 8)
    plain = euler_sample(head, cond, noise, 4)
    assert torch.equal(euler_sample(head, cond, noise, 4, uncond=uncond, guidance=1.0), plain)
    torch.testing.assert_close(euler_sample(head, cond, noise, 4, uncond=uncond, guidance=0.0),
                               euler_sample(head, uncond, noise, 4), atol=1e-5, rtol=1e-5)
    ts, x = time_grid(4), noise
    with torch.no_grad():
        for i in range(4):
            t = ts[i].expand(3)
            v_c, v_u = head(x, t, cond), head(x, t, uncond)
            x = x + (ts[i + 1] - ts[i]) * (v_u + 2.0 * (v_c - v_u))
    guided = euler_sample(head, cond, noise, 4, uncond=uncond, guidance=2.0)
    torch.testing.assert_close(guided, x, atol=1e-5, rtol=1e-5)
    assert (guided - plain).abs().mean() > 1e-3


def test_guidance_needs_a_head_with_text(tiny_model):
    with pytest.raises(ValueError, match="text_in_head"):
        StreamingEngine(tiny_model, guidance=2.0)
    cfg = copy.deepcopy(tiny_model.cfg)
    cfg.head.guidance = 2.0
    with pytest.raises(MidasError, match="head.guidance"):
        cfg.validate()
    cfg.text_in_head = True
    cfg.validate()
