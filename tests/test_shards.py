"""Latent shards: what they hold, their size, resume, keys, ranks, and the window loader."""

import copy
import json
import shutil

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from midas_cli.errors import MidasError
from midas_cli.training import shards

CLIP_MB = 0.07  # one tiny clip's tensors are ~0.061 MB: this shard size holds one clip, 0.13 holds two


def _copy(src, tmp_path, name="data"):
    dst = tmp_path / name
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(".midas-cache"))
    return dst


@pytest.fixture(scope="module")
def encoded(tiny_source, frozen_tiny_model):
    """The tiny dataset in shards of two clips at most: (data_dir, folder)."""
    return tiny_source, shards.encode_dataset(frozen_tiny_model, tiny_source, shard_mb=0.13)


@pytest.fixture(scope="module")
def expected(tiny_source, frozen_tiny_model):
    """Every clip encoded here, whole and in memory, the plain way, by id."""
    from midas_cli.conditions.pose import pose_features
    from midas_cli.model.autoencoder import images_to_tensor
    from midas_cli.training.data import load_clip, prompt_per_frame, read_manifest

    w, h = frozen_tiny_model.cfg.autoencoder.width, frozen_tiny_model.cfg.autoencoder.height
    out = {}
    for e in read_manifest(tiny_source):
        clip = load_clip(tiny_source, e, w, h)
        n, ae = len(clip.frames), frozen_tiny_model.autoencoder
        with torch.no_grad():  # in the batches of 32 encode_dataset uses, so the sums round alike
            lat = torch.cat([ae.encode(images_to_tensor(clip.frames[i:i + 32])) for i in range(0, n, 32)])
            ref = ae.encode(images_to_tensor(clip.ref[None]))[0]
        listen = clip.listen if clip.listen is not None else np.zeros(1, np.float32)
        out[e["id"]] = dict(latents=lat, ref=ref, audio=frozen_tiny_model.audio_features(clip.audio, n),
                            listen=frozen_tiny_model.audio_features(listen, n), pose=pose_features(clip.pose[:n]),
                            prompts=prompt_per_frame(clip.prompts, n))
    return out


def _contents(folder) -> dict:
    """Every indexed clip's tensors and per-frame prompts, by id."""
    from safetensors.torch import load_file

    index = shards.ShardIndex.load(folder)
    out = {}
    for i, cid in enumerate(index.clip_id):
        t = load_file(str(folder / index.shards[index.clip_shard[i]]))
        n = int(index.clip_frames[i])
        out[cid] = {**{k: t[f"{cid}.{k}"] for k in shards.TENSORS},
                    "prompts": [shards.prompt_at_frame(index.clip_prompts[i], j) for j in range(n)]}
    return out


def _assert_same(a: dict, b: dict):
    assert sorted(a) == sorted(b)
    for cid in a:
        for k in shards.TENSORS:
            assert torch.equal(a[cid][k], b[cid][k]), (cid, k)
        assert a[cid]["prompts"] == b[cid]["prompts"], cid


def test_shards_hold_exactly_what_the_latent_dataset_encodes(encoded, expected):
    _, folder = encoded
    _assert_same(_contents(folder), expected)


def test_shards_stay_under_the_size_bound(encoded):
    _, folder = encoded
    index = json.loads((folder / "index.json").read_text())
    assert [len(s["clips"]) for s in index["shards"]] == [2, 1]
    for s in index["shards"]:
        assert s["bytes"] <= 0.13e6 + 4096  # the tensors within the bound, plus the JSON header


class Killed(Exception):
    pass


def test_an_interrupted_encode_resumes_with_the_clips_left(tiny_source, frozen_tiny_model, expected, tmp_path):
    data = _copy(tiny_source, tmp_path)

    def kill_after_first_shard(msg):
        if msg.startswith("wrote shard-r000-00000"):
            raise Killed

    with pytest.raises(Killed):
        shards.encode_dataset(frozen_tiny_model, data, shard_mb=CLIP_MB, log=kill_after_first_shard)
    folder = shards.shard_folder(frozen_tiny_model, data)
    assert [p.name for p in folder.iterdir()] == ["shard-r000-00000.safetensors"]
    logs = []
    shards.encode_dataset(frozen_tiny_model, data, shard_mb=CLIP_MB, log=logs.append)
    assert "encoding 2 of 3 clips" in logs[0]
    _assert_same(_contents(folder), expected)
    logs.clear()
    assert shards.encode_dataset(frozen_tiny_model, data, shard_mb=CLIP_MB, log=logs.append) == folder
    assert logs == [f"latents from {folder}"]  # complete: nothing opened


def test_a_changed_clip_is_encoded_again_and_its_stale_copy_left_out(tiny_source, frozen_tiny_model, tmp_path):
    from midas_cli.training.data import read_manifest

    data = _copy(tiny_source, tmp_path)
    folder = shards.encode_dataset(frozen_tiny_model, data, shard_mb=CLIP_MB)
    entry = read_manifest(data)[1]
    prompts = data / entry["prompts"]
    doc = json.loads(prompts.read_text())
    doc["prompts"][0]["text"] = "a brand new mood"
    prompts.write_text(json.dumps(doc))
    logs = []
    shards.encode_dataset(frozen_tiny_model, data, shard_mb=CLIP_MB, log=logs.append)
    assert "encoding 1 of 3 clips" in logs[0]
    index = json.loads((folder / "index.json").read_text())
    assert index["clips"] == 3 and len(index["shards"]) == 3  # the old shard of clip 1 is out of the index
    assert _contents(folder)[entry["id"]]["prompts"][0] == "a brand new mood"


def test_a_changed_autoencoder_encodes_into_a_new_key_folder(tiny_source, frozen_tiny_model, tmp_path):
    data = _copy(tiny_source, tmp_path)
    first = shards.encode_dataset(frozen_tiny_model, data, shard_mb=1.0)
    other = copy.deepcopy(frozen_tiny_model)
    with torch.no_grad():
        next(other.autoencoder.parameters()).add_(0.01)
    assert shards.dataset_key(other) != shards.dataset_key(frozen_tiny_model)
    logs = []
    second = shards.encode_dataset(other, data, shard_mb=1.0, log=logs.append)
    assert second != first and "encoding 3 of 3 clips" in logs[0]
    a, b = _contents(first), _contents(second)
    assert not torch.equal(a["train-000000"]["latents"], b["train-000000"]["latents"])
    assert torch.equal(a["train-000000"]["audio"], b["train-000000"]["audio"])


def test_a_changed_decoder_keeps_the_key_of_the_latents(frozen_tiny_model):
    """The latents depend on the encoder only: a decoder phase must not re-encode the data."""
    other = copy.deepcopy(frozen_tiny_model)
    with torch.no_grad():
        next(other.autoencoder.dcae.decoder.parameters()).add_(0.01)
    assert shards.dataset_key(other) == shards.dataset_key(frozen_tiny_model)


def test_two_ranks_encode_the_same_data_and_read_disjoint_shards(tiny_source, frozen_tiny_model, expected, tmp_path):
    data = _copy(tiny_source, tmp_path)
    for rank in (0, 1):
        folder = shards.encode_dataset(frozen_tiny_model, data, shard_mb=CLIP_MB, rank=rank, world=2)
    assert not (folder / "index.json").exists()  # rank 0 writes it after the barrier
    assert sorted(p.name for p in folder.glob("*.safetensors")) == [
        "shard-r000-00000.safetensors", "shard-r000-00001.safetensors", "shard-r001-00000.safetensors"]
    shards.write_index(folder)
    _assert_same(_contents(folder), expected)

    index = shards.ShardIndex.load(folder)
    mine = [index.for_rank(r, 2) for r in (0, 1)]
    assert mine[0].shard_set.isdisjoint(mine[1].shard_set)
    assert mine[0].shard_set | mine[1].shard_set == set(index.shards)
    for r in (0, 1):
        loader = shards.window_loader(folder, chunks=2, frames_per_chunk=6, batch_size=4, seed=1, rank=r, world=2,
                                      steps=3, num_workers=0)
        clips = {mine[r].clip_id[c] for step in range(3) for c, _ in loader.sampler.batch(step)}
        own = {cid for cid, s in zip(index.clip_id, index.clip_shard) if index.shards[s] in mine[r].shard_set}
        assert clips <= own
    with pytest.raises(MidasError, match="3 shards for 4 ranks.*shard-mb"):
        shards.window_loader(folder, chunks=2, frames_per_chunk=6, batch_size=1, seed=0, rank=0, world=4)


def _reference_window(item: dict, start: int, k: int, f: int):
    """A window built by hand from a clip's whole tensors."""
    length = k * f
    lat = item["latents"]
    before = item["ref"][None] if start == 0 else lat[start - 1:start]
    return (item["ref"], lat[start:start + length], torch.cat([before, lat[start:start + length - 1]]),
            *(item[name][start:start + length].reshape(k, f, -1) for name in ("audio", "listen", "pose")),
            [item["prompts"][start + c * f] for c in range(k)])


def test_a_window_is_the_slices_latent_dataset_would_take(encoded, expected):
    _, folder = encoded
    index = shards.ShardIndex.load(folder)
    for preload in (False, True):
        ds = shards.WindowDataset(index, chunks=2, frames_per_chunk=6, preload=preload)
        for c in range(len(index.clip_id)):
            for start in (0, 6, int(index.clip_frames[c]) // 6 * 6 - 12):
                got = ds[(c, start)]
                want = _reference_window(expected[index.clip_id[c]], start, 2, 6)
                for g, w in zip(got[:6], want[:6]):
                    assert torch.equal(g, w), (c, start)
                assert got[6] == want[6]


def _batches(folder, **kw):
    loader = shards.window_loader(folder, chunks=2, frames_per_chunk=6, batch_size=3, seed=5, **kw)
    return loader, list(loader)


def _equal(a, b):
    ref, frames, prev, feats, texts = a
    ref2, frames2, prev2, feats2, texts2 = b
    pairs = ((ref, ref2), (frames, frames2), (prev, prev2), (feats.audio, feats2.audio),
             (feats.listen, feats2.listen), (feats.pose, feats2.pose))
    return all(torch.equal(x, y) for x, y in pairs) and texts == texts2 and feats.text is None


def test_the_loader_is_deterministic_whatever_the_workers_and_resumes_at_a_step(encoded):
    _, folder = encoded
    loader, serial = _batches(folder, steps=4, num_workers=0)
    assert loader.batches == 4 and loader.wait_s >= 0
    _, parallel = _batches(folder, steps=4, num_workers=2, prefetch_factor=2)
    assert len(serial) == len(parallel) == 4
    assert all(_equal(a, b) for a, b in zip(serial, parallel))
    assert not _equal(serial[0], serial[1])
    _, resumed = _batches(folder, steps=4, start_step=2, num_workers=0)
    assert len(resumed) == 2 and _equal(resumed[0], serial[2]) and _equal(resumed[1], serial[3])
    _, preloaded = _batches(folder, steps=2, num_workers=0, preload=True)
    assert _equal(preloaded[0], serial[0])

    # each batch is the sampler's descriptors through WindowDataset, in the layout a training step takes
    ds, sampler = loader.dataset, loader.sampler
    for step in (0, 3):
        ref, frames, prev, audio, listen, pose, texts = shards.collate_windows([ds[d] for d in sampler.batch(step)])
        b = serial[step]
        assert torch.equal(frames, b[1]) and torch.equal(prev, b[2]) and torch.equal(audio, b[3].audio)
        assert b[1].shape == (3, 12, 16, 8) and b[3].audio.shape[:3] == (3, 2, 6) and len(b[4][0]) == 2
        assert all(start % 6 == 0 for _, start in sampler.batch(step))


def test_every_clip_too_short_is_an_error(encoded):
    _, folder = encoded
    with pytest.raises(MidasError, match="shorter than 7 chunks"):
        shards.window_loader(folder, chunks=7, frames_per_chunk=6, batch_size=1, seed=0, num_workers=0)


def test_the_sampler_draws_from_seed_rank_and_step_only():
    s = shards.WindowSampler(np.array([40, 10, 100]), chunks=2, frames_per_chunk=6, batch_size=8, seed=3)
    again = shards.WindowSampler(np.array([40, 10, 100]), chunks=2, frames_per_chunk=6, batch_size=8, seed=3,
                                 start_step=5)
    assert next(iter(again)) == s.batch(5) != s.batch(4)
    assert all(c != 1 for step in range(20) for c, _ in s.batch(step))  # clip 1 is shorter than a window
    assert s.batch(0) != shards.WindowSampler(np.array([40, 10, 100]), 2, 6, 8, 3, rank=1).batch(0)


def test_cli_encode_dataset_writes_the_shards(tiny_source, tmp_path):
    from midas_cli.cli.app import app

    data = _copy(tiny_source, tmp_path)
    args = ["encode-dataset", str(data), "--recipe", "demo_base", "model=tiny", "autoencoder.steps=0",
            f"output={tmp_path / 'run'}", "--shard-mb", "0.1"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    folder = next((data / ".midas-cache" / "shards").iterdir())
    assert len(shards.ShardIndex.load(folder).shards) == 3 and "shards:" in result.output


def test_cli_encode_dataset_on_a_missing_folder_is_one_line(tmp_path):
    from midas_cli.cli.app import app

    result = CliRunner().invoke(app, ["encode-dataset", str(tmp_path / "nope")])
    assert result.exit_code == 1
    assert result.output.strip().count("\n") == 0 and "no such folder" in result.output


def test_the_frame_stream_is_deterministic_resumes_at_a_step_and_includes_references(tiny_source):
    from midas_cli.media.image import load_reference
    from midas_cli.training.data import read_manifest
    from midas_cli.training.frames import FrameStream, frame_loader

    kw = dict(width=64, height=64, batch_size=4, seed=2, clips_per_block=2, block_steps=3)
    serial = list(frame_loader(tiny_source, steps=7, num_workers=0, **kw))
    parallel = list(frame_loader(tiny_source, steps=7, num_workers=2, **kw))
    assert len(serial) == len(parallel) == 7 and serial[0].shape == (4, 64, 64, 3) and serial[0].dtype == torch.uint8
    assert all(torch.equal(a, b) for a, b in zip(serial, parallel))
    resumed = list(frame_loader(tiny_source, steps=7, start_step=4, num_workers=0, **kw))
    assert len(resumed) == 3 and all(torch.equal(a, b) for a, b in zip(resumed, serial[4:]))
    assert not torch.equal(serial[0], serial[3])

    stream = FrameStream(tiny_source, 64, 64, 4, seed=2, clips_per_block=2, block_steps=3)
    pool, poses, _ = stream.pool(0)
    refs = {load_reference(tiny_source / e["ref"], 64, 64).tobytes() for e in read_manifest(tiny_source)}
    assert len(pool) == 2 * 38 + 2 and {pool[-1].tobytes(), pool[-2].tobytes()} <= refs
    assert not poses.any()  # without with_pose

    # with_pose: each frame with its clip's pose, in step; a reference with pose 0
    from midas_cli.media.pose import load_pose

    posed = FrameStream(tiny_source, 64, 64, 4, seed=2, clips_per_block=2, block_steps=3, with_pose=True)
    pool2, poses2, _ = posed.pool(0)
    assert np.array_equal(pool2, pool) and poses2.shape == (len(pool), 6)
    clip_poses = [load_pose(tiny_source / e["pose"], 38) for e in read_manifest(tiny_source)]
    assert any(np.array_equal(poses2[:38], p) for p in clip_poses) and poses2[:38].any()
    assert not poses2[-2:].any()
    batches = list(frame_loader(tiny_source, steps=7, num_workers=0, with_pose=True, **kw))
    assert all(torch.equal(f, s) for (f, _), s in zip(batches, serial))
    frames, pose = batches[0]
    assert pose.shape == (4, 6) and pose.dtype == torch.float32


def test_foreign_context_gives_a_share_of_windows_the_context_of_another_stretch_of_their_clip():
    kw = {"chunks": 2, "frames_per_chunk": 6, "batch_size": 8, "seed": 3}
    frames = np.array([40, 10, 100, 18])
    plain = shards.WindowSampler(frames, **kw)
    every = shards.WindowSampler(frames, **kw, foreign_context=1.0)
    some = shards.WindowSampler(frames, **kw, foreign_context=0.5)
    assert shards.WindowSampler(frames, **kw, foreign_context=0.0).batch(2) == plain.batch(2)
    moved = 0
    for step in range(20):
        own = plain.batch(step)
        for sampler in (every, some):
            got = sampler.batch(step)
            assert [d[:2] for d in got] == own  # the same windows; only their context moves
            for clip, start, *elsewhere in got:
                if elsewhere:
                    (at,) = elsewhere
                    # chunk-aligned, a whole window inside the clip, overlapping none of its own frames
                    assert at % 6 == 0 and at + 12 <= frames[clip] and abs(at - start) >= 12
        # clip 3's windows start at 0 or 6: no stretch a window away, so they keep their own context
        moved += sum(len(d) == 3 for d in every.batch(step))
        assert all((len(d) == 3) == (d[0] != 3) for d in every.batch(step))
    share = np.mean([len(d) == 3 for step in range(20) for d in some.batch(step) if d[0] != 3])
    assert moved > 80 and 0.3 < share < 0.7


def test_a_foreign_window_has_its_own_targets_and_the_other_stretch_as_context(encoded, expected):
    _, folder = encoded
    index = shards.ShardIndex.load(folder)
    ds = shards.WindowDataset(index, chunks=2, frames_per_chunk=6)
    c = int(np.argmax(index.clip_frames))
    for start, at in ((12, 0), (0, 18)):
        got, own, there = ds[(c, start, at)], ds[(c, start)], ds[(c, at)]
        assert torch.equal(got[1], own[1]) and torch.equal(got[2], there[2]) and not torch.equal(got[2], own[2])
        for g, o in zip(got[3:6], own[3:6]):  # conditions and prompts: the window's own
            assert torch.equal(g, o)
        assert got[6] == own[6] and torch.equal(got[0], own[0])
