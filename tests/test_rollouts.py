"""The decoder phase on the model's own rollouts (`decoder.rollout_share`): the rollouts really
are the model's generation, the frame stream pairs each marked frame with its own rollout
tokens, and the decoder step decodes those instead of the encoding."""

import numpy as np
import pytest
import torch

from midas_cli.errors import MidasError


def _clip(source, i=0):
    from midas_cli.training.data import load_clip, read_manifest

    return load_clip(source, read_manifest(source)[i], 64, 64)


def test_a_rollout_is_the_models_own_generation(tiny_source, frozen_tiny_model):
    """Decoded, a clip's rollout tokens are exactly the frames `render` makes of its inputs."""
    from midas_cli.model.autoencoder import tensor_to_images
    from midas_cli.pipeline import RenderInputs, render
    from midas_cli.training.rollouts import rollout_tokens

    clip = _clip(tiny_source)
    tokens = rollout_tokens(frozen_tiny_model, clip, seed=5)
    assert tokens.shape == (len(clip.frames), frozen_tiny_model.cfg.tokens_per_frame, frozen_tiny_model.cfg.latent_channels)
    inputs = RenderInputs(ref=clip.ref, audio=clip.audio, n_frames=len(clip.frames), listen_audio=clip.listen,
                          pose=clip.pose, prompts=list(clip.prompts))
    frames = []
    render(frozen_tiny_model, inputs, frames.append, seed=5, pipeline=False, channels_last=False)
    f = frozen_tiny_model.cfg.frames_per_chunk
    with torch.no_grad():
        decoded = np.concatenate([tensor_to_images(frozen_tiny_model.autoencoder.decode(tokens[i:i + f], frozen_tiny_model.cfg.latent_grid))
                                  for i in range(0, len(tokens), f)])
    assert np.array_equal(decoded, np.stack(frames))
    # sampled, not looked up: another seed draws another rollout, and neither is the encoding
    assert not torch.equal(rollout_tokens(frozen_tiny_model, clip, seed=6), tokens)
    from midas_cli.model.autoencoder import images_to_tensor

    with torch.no_grad():
        encoded = frozen_tiny_model.autoencoder.encode(images_to_tensor(clip.frames))
    assert (encoded - tokens).abs().mean() > 1e-3


def test_rollouts_are_written_per_clip_the_same_for_any_rank_count_and_resume(tiny_source, frozen_tiny_model, tmp_path):
    from midas_cli.training.rollouts import load_rollout, write_rollouts

    frozen_tiny_model.train()  # a training model is rolled out in eval mode, then left as it was
    logs = []
    one = write_rollouts(frozen_tiny_model, tiny_source, tmp_path / "one", seed=3, log=logs.append)
    assert frozen_tiny_model.training
    frozen_tiny_model.eval()
    for rank in (0, 1):
        write_rollouts(frozen_tiny_model, tiny_source, tmp_path / "two", seed=3, rank=rank, world=2, log=logs.append)
    clips = [_clip(tiny_source, i) for i in range(3)]
    for c in clips:
        a, b = load_rollout(one, c.id, len(c.frames)), load_rollout(tmp_path / "two", c.id, len(c.frames))
        assert a.shape == (len(c.frames), frozen_tiny_model.cfg.tokens_per_frame, frozen_tiny_model.cfg.latent_channels)
        assert np.array_equal(a, b)
    assert not np.array_equal(load_rollout(one, clips[0].id, 30), load_rollout(one, clips[1].id, 30))
    assert "3 clips rolled out" in logs[0]
    again = []
    write_rollouts(frozen_tiny_model, tiny_source, one, seed=3, log=again.append)
    assert "0 clips rolled out" in again[0]

    (one / f"{clips[0].id}.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(MidasError, match=rf"{clips[0].id}\.safetensors: not a readable rollout"):
        load_rollout(one, clips[0].id, 10)
    with pytest.raises(MidasError, match="frames of rollout for a clip of"):
        load_rollout(one, clips[1].id, 10_000)


def _labelled_rollouts(source, folder):
    """Fake rollouts whose every token of clip i's frame t reads 1000·(i + 1) + t."""
    from safetensors.torch import save_file

    from midas_cli.training.data import read_manifest

    folder.mkdir()
    for i, e in enumerate(read_manifest(source)):
        t = torch.arange(38, dtype=torch.float32)[:, None, None] + 1000 * (i + 1)
        save_file({"tokens": t.expand(38, 4, 2).contiguous()}, str(folder / f"{e['id']}.safetensors"))


def test_the_frame_stream_marks_a_share_of_clip_frames_each_with_its_own_rollout(tiny_source, tmp_path):
    from midas_cli.media.video_in import read_frames
    from midas_cli.training.data import read_manifest
    from midas_cli.training.frames import FrameStream, frame_loader

    _labelled_rollouts(tiny_source, tmp_path / "rollouts")
    videos = [np.stack(list(read_frames(tiny_source / e["video"], width=64, height=64)))
              for e in read_manifest(tiny_source)]
    kw = dict(width=64, height=64, batch_size=8, seed=2, clips_per_block=2, block_steps=3, num_workers=0)
    plain = list(frame_loader(tiny_source, steps=12, **kw))
    half = list(frame_loader(tiny_source, steps=12, rollouts=tmp_path / "rollouts", rollout_share=0.5, **kw))
    used = 0
    for frames, (f, poses, tokens, use) in zip(plain, half):
        assert torch.equal(frames, f)  # the same frames as without rollouts
        for row in range(8):
            label = int(tokens[row, 0, 0])
            if label == 0:  # a reference: no rollout, never marked
                assert not use[row]
                continue
            clip, t = divmod(label, 1000)
            assert np.array_equal(f[row].numpy(), videos[clip - 1][t])  # its own clip's frame t
            used += int(use[row])
    assert 0.3 < used / (12 * 8) < 0.7
    stream = FrameStream(tiny_source, 64, 64, 8, seed=2, clips_per_block=2, block_steps=3,
                         rollouts=tmp_path / "rollouts", rollout_share=1.0)
    _, _, tokens, use = stream.block(0)
    assert np.array_equal(use, tokens[..., 0, 0] > 0)  # every frame of a clip, no reference
    none = FrameStream(tiny_source, 64, 64, 8, seed=2, clips_per_block=2, block_steps=3,
                       rollouts=tmp_path / "rollouts", rollout_share=0.0)
    assert not none.block(0)[3].any()


def test_the_decoder_step_decodes_the_marked_frames_from_their_rollout_tokens():
    from midas_cli.model.autoencoder import FrameAutoencoder, build_dcae
    from midas_cli.model.config import preset
    from midas_cli.training.objective import ReconstructionLoss

    torch.manual_seed(0)
    cfg = preset("tiny")
    ae = FrameAutoencoder(build_dcae(cfg.autoencoder), cfg.autoencoder.patch_size)
    x = torch.rand(3, 3, cfg.autoencoder.height, cfg.autoencoder.width) * 2 - 1
    tokens = torch.randn(3, cfg.tokens_per_frame, cfg.latent_channels)
    use = torch.tensor([True, False, True])
    loss, rec = ReconstructionLoss(ae, frozen_encoder=True)(x, tokens=tokens, use=use)
    loss.backward()
    assert all(p.grad is None for p in ae.dcae.encoder.parameters())
    with torch.no_grad():
        from_tokens = ae.decode(tokens, cfg.latent_grid)
        from_frames = ae.dcae.decode(ae.dcae.encode(x, return_dict=False)[0], return_dict=False)[0]
    assert torch.allclose(rec[use], from_tokens[use], atol=1e-5)
    assert torch.allclose(rec[~use], from_frames[~use], atol=1e-5)
    assert torch.allclose(ae.decode(ae.encode(x), cfg.latent_grid), from_frames, atol=1e-5)


def test_the_decoder_phase_on_rollouts_writes_them_learns_from_them_and_resumes_exactly(tmp_path):
    """`decoder.rollout_share`: the finished model rolls every clip out into OUTPUT/rollouts, the
    decoder alone moves, and a run killed mid-way resumes to the same weights (rollouts kept)."""
    from midas_cli.synth.dataset import write_dataset
    from midas_cli.training.loop import train
    from midas_cli.training.recipe import load_recipe

    data = tmp_path / "data"
    write_dataset(data, clips=3, seconds=3.0, seed=0, size=64, progress=False)

    class Killed(Exception):
        pass

    def recipe(out, share=0.5):
        return load_recipe("demo_base", [f"data.dir={data}", "model=tiny", f"output={out}", "autoencoder.steps=6",
                                         "autoencoder.batch_size=4", "train.batch_size=2", "train.steps=4",
                                         "train.warmup=2", "checkpoint_every=4", "eval=null", "decoder.steps=8",
                                         "decoder.batch_size=4", "decoder.lr=0.003", "decoder.warmup=2",
                                         "decoder.log_every=4", f"decoder.rollout_share={share}", "data.workers=0"])

    logs = []
    train(recipe(tmp_path / "a"), log=logs.append)
    assert len(list((tmp_path / "a" / "rollouts").glob("*.safetensors"))) == 3
    assert any(m.startswith("rollouts: 3 clips rolled out by the model") for m in logs)
    a = torch.load(tmp_path / "a" / "train_state.pt", weights_only=True)
    assert a["phase"] == "decoder" and a["step"] == 8

    def kill(msg):
        if msg.startswith("decoder step 8/"):
            raise Killed

    with pytest.raises(Killed):
        train(recipe(tmp_path / "b"), log=kill)
    resumed = []
    train(recipe(tmp_path / "b"), log=resumed.append)
    assert any("resuming: phase decoder, step 4" in m for m in resumed)
    assert any(m.startswith("rollouts: 0 clips rolled out") for m in resumed)
    b = torch.load(tmp_path / "b" / "train_state.pt", weights_only=True)
    moved = {k for k in a["model"] if not torch.equal(a["model"][k], b["model"][k])}
    assert not moved, sorted(moved)[:5]

    # the rollouts are what made the difference: the same run at share 0 ends with another
    # decoder, and the same encoder, latent scale and model
    train(recipe(tmp_path / "c", share=0.0), log=lambda m: None)
    assert not (tmp_path / "c" / "rollouts").exists()
    c = torch.load(tmp_path / "c" / "train_state.pt", weights_only=True)
    moved = {k for k in a["model"] if not torch.equal(a["model"][k], c["model"][k])}
    assert moved and all(k.startswith("autoencoder.dcae.decoder.") for k in moved), sorted(moved)[:5]
