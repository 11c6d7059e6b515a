"""Training latents on disk: encoded once into shards of bounded size, read one window at a time.

Holding every latent of every clip in memory stops working long before 20,000 hours of video
(the demo's 240 clips alone took 2.4 GB of decoded frames). Here the model phase's data lives in
`DATA_DIR/.midas-cache/shards/<key>/`:

    shard-r000-00000.safetensors   per clip: {id}.latents (T, N, C), {id}.ref (N, C),
    shard-r000-00001.safetensors             {id}.audio, {id}.listen (T, A), {id}.pose (T, 12);
    ...                            metadata: the clips (id, frames, source fingerprint, prompts)
    index.json                     the shards, their clips, frame counts and prompts

`<key>` hashes what the latents depend on apart from the clips (autoencoder weights and config,
frame size, audio and pose feature settings), so a retrained autoencoder encodes into a new
folder. Each clip carries a cheap fingerprint of its sources (manifest entry, sizes and mtimes),
so a changed clip is encoded again. Shards are written atomically, so an interrupted encode
resumes at the first clip not in a complete shard; under torchrun each rank encodes its share.

Reading (`window_loader`) maps the shards (safetensors `get_slice`) and copies out only the
window a step needs, in DataLoader workers; which windows a step gets depends only on
(seed, rank, step), so a resumed run sees exactly the batches of an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from midas_cli.errors import MidasError
from midas_cli.model.config import FPS

FORMAT = 1  # bump when the shard layout changes: old folders then get a new key
TENSORS = ("latents", "ref", "audio", "listen", "pose")
SOURCE_FIELDS = ("video", "audio", "listen_audio", "ref", "pose", "prompts")
INDEX = "index.json"


# ---- keys and fingerprints ------------------------------------------------------------------

def dataset_key(model) -> str:
    """A hash of everything the encoded tensors depend on except the clips themselves."""
    from midas_cli.conditions.pose import POSE_FEATURE_DIM, POSE_SCALE

    h = hashlib.blake2b(digest_size=10)
    ae = model.autoencoder
    for module in (ae, model.audio_features):  # audio_features: Whisper weights, if any
        for name, t in sorted(module.state_dict().items()):
            if name.startswith("dcae.decoder."):
                continue  # the latents do not depend on it (a decoder phase leaves them as they are)
            h.update(name.encode())
            h.update(t.detach().float().cpu().numpy().tobytes())
    cfg = model.cfg
    # config keys starting with "_" are diffusers' bookkeeping ("_use_default_values" comes in a set's order)
    dcae = {k: v for k, v in ae.dcae.config.items() if not k.startswith("_")}
    h.update(json.dumps({
        "format": FORMAT, "dcae": dcae, "scaling_factor": ae.scaling_factor,
        "patch_size": ae.patch_size, "size": [cfg.autoencoder.width, cfg.autoencoder.height],
        "audio": cfg.audio.__dict__, "pose": [POSE_FEATURE_DIM, POSE_SCALE.tolist()], "fps": FPS,
        "dtype": str(model.dtype),
    }, sort_keys=True, default=str).encode())
    return h.hexdigest()


def shard_folder(model, data_dir: Path | str) -> Path:
    return Path(data_dir) / ".midas-cache" / "shards" / dataset_key(model)


def source_fingerprint(data_dir: Path, entry: dict) -> str:
    """The manifest entry plus the size and mtime of each file it names: cheap, and it changes
    when a clip is re-made (a stat per file, not a read)."""
    h = hashlib.blake2b(json.dumps(entry, sort_keys=True).encode(), digest_size=8)
    for key in SOURCE_FIELDS:
        if entry.get(key):
            try:
                st = (data_dir / entry[key]).stat()
                h.update(f"{key}:{st.st_size}:{st.st_mtime_ns}".encode())
            except OSError:
                h.update(f"{key}:missing".encode())  # load_clip names the missing file
    return h.hexdigest()


def _sources_hash(fingerprints: list[str]) -> str:
    return hashlib.blake2b("\n".join(fingerprints).encode(), digest_size=12).hexdigest()


def _entries(data_dir: Path, max_clips: int | None) -> list[dict]:
    from midas_cli.training.data import read_manifest

    entries = read_manifest(data_dir)[:max_clips]
    seen = set()
    for e in entries:
        if e["id"] in seen:
            raise MidasError(f"{data_dir / 'manifest.jsonl'}: clip id {e['id']!r} appears twice")
        seen.add(e["id"])
    return entries


# ---- prompts as runs --------------------------------------------------------------------------

def prompt_runs(per_frame: list[str]) -> list[list]:
    """Per-frame prompts → [[first_frame, text], ...] (one entry per change): small metadata."""
    runs = []
    for i, text in enumerate(per_frame):
        if not runs or runs[-1][1] != text:
            runs.append([i, text])
    return runs


def prompt_at_frame(runs: list[list], frame: int) -> str:
    text = ""
    for start, t in runs:
        if start > frame:
            break
        text = t
    return text


# ---- encoding -------------------------------------------------------------------------------

def encode_clip(model, data_dir: Path, entry: dict, batch_encode: int = 32) -> dict:
    """One manifest clip → its tensors and per-frame prompts, with frames decoded and encoded a
    batch at a time."""
    from midas_cli.conditions.pose import pose_features
    from midas_cli.media.image import load_reference
    from midas_cli.media.video_in import read_frames
    from midas_cli.model.autoencoder import images_to_tensor
    from midas_cli.training.data import entry_conditions, prompt_per_frame

    ae, w, h = model.autoencoder, model.cfg.autoencoder.width, model.cfg.autoencoder.height
    parts, batch = [], []

    def flush():
        parts.append(ae.encode(images_to_tensor(np.stack(batch), model.device, model.dtype)).cpu())
        batch.clear()

    with torch.no_grad():
        for frame in read_frames(data_dir / entry["video"], width=w, height=h):
            batch.append(frame)
            if len(batch) == batch_encode:
                flush()
        if batch:
            flush()
        if not parts:
            raise MidasError(f"{data_dir / entry['video']}: no frames")
        ref = ae.encode(images_to_tensor(load_reference(data_dir / entry["ref"], w, h)[None],
                                         model.device, model.dtype)).cpu()[0]
    lat = torch.cat(parts)
    n = len(lat)
    audio, listen, pose, prompts = entry_conditions(data_dir, entry, n)
    if listen is None:
        listen = np.zeros(1, np.float32)  # no listen track: silence
    return dict(latents=lat, ref=ref, audio=model.audio_features(audio, n).cpu(),
                listen=model.audio_features(listen, n).cpu(), pose=pose_features(pose[:n]),
                prompts=prompt_per_frame(prompts, n))


def _shard_name(rank: int, n: int) -> str:
    return f"shard-r{rank:03d}-{n:05d}.safetensors"


def _shard_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("shard-r*-*.safetensors"))  # finished shards only: tmp files end otherwise


def read_shard_clips(path: Path) -> list[dict]:
    """A shard's clip list from its header: [{id, frames, fingerprint, prompts}]."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            return json.loads(f.metadata()["clips"])
    except Exception as e:  # a foreign or truncated file in the cache folder
        raise MidasError(f"{path}: not a MIDAS shard ({str(e).splitlines()[0][:100]}); delete it") from None


def _write_shard(path: Path, clips: list[dict]) -> None:
    from safetensors.torch import save_file

    tensors = {f"{c['id']}.{k}": c[k].contiguous() for c in clips for k in TENSORS}
    meta = [{"id": c["id"], "frames": len(c["latents"]), "fingerprint": c["fingerprint"],
             "prompts": prompt_runs(c["prompts"])} for c in clips]
    tmp = path.with_name(path.name + ".partial")
    save_file(tensors, str(tmp), metadata={"clips": json.dumps(meta), "format": str(FORMAT)})
    tmp.replace(path)  # atomic: a shard is either complete or absent


def _clip_bytes(clip: dict) -> int:
    return sum(clip[k].numel() * clip[k].element_size() for k in TENSORS)


def encode_dataset(model, data_dir: Path | str, *, shard_mb: float = 256.0, rank: int = 0, world: int = 1,
                   batch_encode: int = 32, max_clips: int | None = None, log=None, progress=None) -> Path:
    """Encode every manifest clip (this rank's share: entries i with i % world == rank) into shards
    of at most `shard_mb` MB (a single longer clip gets a shard of its own); returns the folder.

    Resumable: clips already in a complete shard with an unchanged fingerprint are skipped.
    With world == 1 the index is written here; with more ranks the caller waits for all of them
    (a barrier) and rank 0 calls `write_index`. `progress(done, total)` counts this rank's clips.
    """
    data_dir = Path(data_dir)
    entries = _entries(data_dir, max_clips)
    fingerprints = [source_fingerprint(data_dir, e) for e in entries]
    folder = shard_folder(model, data_dir)
    if _index_is_current(folder, fingerprints):
        if log:
            log(f"latents from {folder}")
        return folder
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise MidasError(f"{folder}: cannot create the shard folder ({e.strerror})") from None
    # every rank's shards count (a run restarted with another world size re-encodes nothing), and a
    # stale copy of a re-made clip may sit in any of them: match (id, fingerprint) pairs
    done = {(c["id"], c["fingerprint"]) for path in _shard_files(folder) for c in read_shard_clips(path)}
    mine = [(e, fp) for i, (e, fp) in enumerate(zip(entries, fingerprints)) if i % world == rank]
    todo = [(e, fp) for e, fp in mine if (e["id"], fp) not in done]
    if log:
        share = f" (rank {rank}/{world})" if world > 1 else ""
        log(f"encoding {len(todo)} of {len(mine)} clips into {folder}{share}")
    numbers = [int(p.stem.split("-")[2]) for p in folder.glob(f"shard-r{rank:03d}-*.safetensors")]
    next_n = max(numbers, default=-1) + 1
    limit = shard_mb * 1e6
    pending, size, skipped = [], 0, len(mine) - len(todo)
    if progress:
        progress(skipped, len(mine))

    def flush():
        nonlocal next_n, size
        path = folder / _shard_name(rank, next_n)
        _write_shard(path, pending)
        if log:
            log(f"wrote {path.name}: {len(pending)} clips, {sum(len(c['latents']) for c in pending)} frames, "
                f"{size / 1e6:.1f} MB")
        next_n, size = next_n + 1, 0
        pending.clear()

    for i, (entry, fp) in enumerate(todo):
        clip = {"id": entry["id"], "fingerprint": fp, **encode_clip(model, data_dir, entry, batch_encode)}
        nbytes = _clip_bytes(clip)
        if pending and size + nbytes > limit:
            flush()
        pending.append(clip)
        size += nbytes
        if progress:
            progress(skipped + i + 1, len(mine))
    if pending:
        flush()
    if world == 1:
        write_index(folder, data_dir, max_clips)
    return folder


def _index_is_current(folder: Path, fingerprints: list[str]) -> bool:
    try:
        index = json.loads((folder / INDEX).read_text())
    except (OSError, ValueError):
        return False
    return index.get("sources") == _sources_hash(fingerprints)


def write_index(folder: Path | str, data_dir: Path | str | None = None, max_clips: int | None = None) -> Path:
    """`index.json` from the shards' headers, for the clips of the current manifest (a stale copy
    of a re-made clip, or a clip no longer listed, stays out). Call once every rank has finished."""
    folder = Path(folder)
    data_dir = Path(data_dir) if data_dir is not None else folder.parents[2]
    entries = _entries(data_dir, max_clips)
    fingerprints = [source_fingerprint(data_dir, e) for e in entries]
    wanted = {e["id"]: fp for e, fp in zip(entries, fingerprints)}
    shards, found = [], set()
    for path in _shard_files(folder):
        clips = []
        for c in read_shard_clips(path):
            if wanted.get(c["id"]) == c["fingerprint"] and c["id"] not in found:
                found.add(c["id"])
                clips.append({"id": c["id"], "frames": c["frames"], "prompts": c["prompts"]})
        if clips:
            shards.append({"file": path.name, "bytes": path.stat().st_size, "clips": clips})
    missing = [i for i in wanted if i not in found]
    if missing:
        raise MidasError(f"{folder}: {len(missing)} clips not encoded yet (first: {missing[0]}); "
                         "run encode_dataset on every rank first")
    index = {"format": FORMAT, "key": folder.name, "sources": _sources_hash(fingerprints),
             "clips": len(found), "frames": sum(c["frames"] for s in shards for c in s["clips"]), "shards": shards}
    tmp = folder / (INDEX + ".partial")
    tmp.write_text(json.dumps(index))
    tmp.replace(folder / INDEX)
    return folder / INDEX


# ---- reading ---------------------------------------------------------------------------------

@dataclass
class ShardIndex:
    """The shard list of a key folder: per clip its shard, id, length and prompt runs."""

    folder: Path
    shards: list[str]  # file names, in index order
    clip_shard: np.ndarray  # (clips,) int: index into `shards`
    clip_id: list[str]
    clip_frames: np.ndarray  # (clips,) int
    clip_prompts: list[list]

    @classmethod
    def load(cls, folder: Path | str) -> "ShardIndex":
        folder = Path(folder)
        try:
            index = json.loads((folder / INDEX).read_text())
        except OSError:
            raise MidasError(f"{folder}: no {INDEX} (run `midas encode-dataset` first)") from None
        except ValueError as e:
            raise MidasError(f"{folder / INDEX}: not JSON ({e}); delete it and encode again") from None
        shard, ids, frames, prompts = [], [], [], []
        for i, s in enumerate(index["shards"]):
            for c in s["clips"]:
                shard.append(i)
                ids.append(c["id"])
                frames.append(c["frames"])
                prompts.append(c["prompts"])
        return cls(folder, [s["file"] for s in index["shards"]], np.array(shard, dtype=np.int64), ids,
                   np.array(frames, dtype=np.int64), prompts)

    def for_rank(self, rank: int, world: int) -> "ShardIndex":
        """The shards rank `rank` reads (shard i with i % world == rank), and their clips."""
        if len(self.shards) < world:
            raise MidasError(f"{self.folder}: {len(self.shards)} shards for {world} ranks; every rank reads "
                             "its own shards: encode again with a smaller shard_mb (`--shard-mb`)")
        keep = self.clip_shard % world == rank
        rows = np.flatnonzero(keep)
        return ShardIndex(self.folder, self.shards, self.clip_shard[rows], [self.clip_id[i] for i in rows],
                          self.clip_frames[rows], [self.clip_prompts[i] for i in rows])

    @property
    def shard_set(self) -> set[str]:
        return {self.shards[i] for i in np.unique(self.clip_shard)}


class WindowDataset(torch.utils.data.Dataset):
    """One training window per descriptor (clip, start): the slices it needs, read from the shard
    (mmap, a few open files kept per worker), or from memory with `preload`."""

    def __init__(self, index: ShardIndex, chunks: int, frames_per_chunk: int, preload: bool = False,
                 open_files: int = 8):
        self.index, self.k, self.f = index, chunks, frames_per_chunk
        self.open_files = open_files
        self._handles: OrderedDict = OrderedDict()
        self._memory = None
        if preload:
            from safetensors.torch import load_file

            self._memory = {name: load_file(str(index.folder / name)) for name in sorted(index.shard_set)}

    def __getstate__(self):  # open files stay with their process
        return {**self.__dict__, "_handles": OrderedDict()}

    def _reader(self, name: str):
        if self._memory is not None:
            return _MemoryShard(self._memory[name])
        h = self._handles.get(name)
        if h is None:
            from safetensors import safe_open

            h = self._handles[name] = safe_open(str(self.index.folder / name), "pt")
            while len(self._handles) > self.open_files:
                self._handles.popitem(last=False)
        self._handles.move_to_end(name)
        return h

    def __len__(self):
        return len(self.index.clip_id)

    def __getitem__(self, descriptor):
        """descriptor (clip, start) or (clip, start, context_start): the window's own context, or
        the context frames of the window at context_start (`foreign_context`)."""
        c, start, *elsewhere = descriptor
        k, f = self.k, self.f
        length = k * f
        cid = self.index.clip_id[c]
        h = self._reader(self.index.shards[self.index.clip_shard[c]])
        ref = h.get_tensor(f"{cid}.ref")
        latents = h.get_slice(f"{cid}.latents")

        def context(at):  # each slot's input: the frame before it, the reference before frame 0
            lat = latents[max(at - 1, 0):at + length]
            return lat, (torch.cat([ref[None], lat[:-1]]) if at == 0 else lat[:-1])

        lat, prev = context(start)
        frames = lat[-length:]
        if elsewhere:
            prev = context(elsewhere[0])[1]
        audio, listen, pose = (h.get_slice(f"{cid}.{name}")[start:start + length].reshape(k, f, -1)
                               for name in ("audio", "listen", "pose"))
        runs = self.index.clip_prompts[c]
        texts = [prompt_at_frame(runs, start + j * f) for j in range(k)]
        return ref, frames, prev, audio, listen, pose, texts


class _MemoryShard:
    """A loaded shard behind the two calls `WindowDataset` makes of a `safe_open` handle."""

    def __init__(self, tensors: dict):
        self.tensors = tensors

    def get_tensor(self, name):
        return self.tensors[name]

    def get_slice(self, name):
        return self.tensors[name]


def collate_windows(items):
    """Windows → (ref, frames, prev, audio, listen, pose, texts); plain tensors, so pin_memory works."""
    cols = list(zip(*items))
    return (*(torch.stack(c) for c in cols[:6]), [list(t) for t in cols[6]])


@dataclass
class WindowSampler:
    """Batches of window descriptors; batch `s` depends only on (seed, rank, s)."""

    clip_frames: np.ndarray  # (clips,) frame count of each clip this rank reads
    chunks: int
    frames_per_chunk: int
    batch_size: int
    seed: int
    rank: int = 0
    start_step: int = 0
    steps: int | None = None  # None: endless
    # share of windows that get the context of another, non-overlapping window of the same clip
    foreign_context: float = 0.0
    eligible: np.ndarray = field(init=False)

    def __post_init__(self):
        self.length = length = self.chunks * self.frames_per_chunk
        self.eligible = np.flatnonzero(self.clip_frames >= length)
        if len(self.eligible) == 0:
            raise MidasError(f"every clip is shorter than {self.chunks} chunks ({length / FPS:.2f} s)")
        self._starts = (self.clip_frames[self.eligible] - length) // self.frames_per_chunk + 1

    def batch(self, step: int) -> list[tuple[int, int]]:
        rng = np.random.default_rng([self.seed, self.rank, step])
        pick = rng.integers(0, len(self.eligible), self.batch_size)
        starts = self.frames_per_chunk * rng.integers(0, self._starts[pick])  # chunk-aligned, as generation
        batch = [(int(self.eligible[p]), int(s)) for p, s in zip(pick, starts)]
        if self.foreign_context > 0:
            # a stream of its own, so the windows themselves are those of foreign_context 0
            other = np.random.default_rng([self.seed, self.rank, step, 1])
            for i, (p, s) in enumerate(zip(pick, starts)):
                if other.random() < self.foreign_context:
                    far = [j for j in range(self._starts[p]) if abs(j * self.frames_per_chunk - s) >= self.length]
                    if far:
                        batch[i] += (int(self.frames_per_chunk * far[other.integers(len(far))]),)
        return batch

    def __iter__(self):
        step = self.start_step
        while self.steps is None or step < self.steps:
            yield self.batch(step)
            step += 1

    def __len__(self):
        if self.steps is None:
            raise TypeError("an endless WindowSampler has no length")
        return max(0, self.steps - self.start_step)


class WindowLoader:
    """Iterates batches `(ref, frames, prev, feats, texts)`: reference latents (B, N, C), target
    frames and each one's context frame (B, T, N, C), ChunkFeatures (text still to encode), and
    each sequence's prompt per chunk.

    `wait_s` is the cumulative time spent blocked waiting for the next batch (data stalls)."""

    def __init__(self, loader, sampler: WindowSampler, dataset: WindowDataset):
        self.loader, self.sampler, self.dataset = loader, sampler, dataset
        self.wait_s = 0.0
        self.batches = 0

    def __iter__(self):
        from midas_cli.model.midas import ChunkFeatures

        it = iter(self.loader)
        while True:
            t0 = time.perf_counter()
            try:
                ref, frames, prev, audio, listen, pose, texts = next(it)
            except StopIteration:
                return
            self.wait_s += time.perf_counter() - t0
            self.batches += 1
            yield ref, frames, prev, ChunkFeatures(audio=audio, pose=pose, text=None, listen=listen), texts


def window_loader(folder: Path | str, *, chunks: int, frames_per_chunk: int, batch_size: int, seed: int,
                  rank: int = 0, world: int = 1, start_step: int = 0, steps: int | None = None,
                  num_workers: int = 2, prefetch_factor: int = 4, preload: bool = False,
                  pin_memory: bool = False, foreign_context: float = 0.0) -> WindowLoader:
    """Batches of training windows from this rank's shards, read ahead by `num_workers` processes.

    Batch s is the same whatever `num_workers`, and `start_step=s` starts at it (exact resume).
    foreign_context: the share of windows whose context frames come from another window of the
    same clip (`WindowSampler`).
    """
    index = ShardIndex.load(folder).for_rank(rank, world)
    dataset = WindowDataset(index, chunks, frames_per_chunk, preload=preload)
    sampler = WindowSampler(index.clip_frames, chunks, frames_per_chunk, batch_size, seed, rank, start_step, steps,
                            foreign_context)
    extra = dict(persistent_workers=True, prefetch_factor=prefetch_factor) if num_workers > 0 else {}
    # its own generator: starting the workers must not draw from the training's torch RNG, or a
    # resumed run (which starts them at another point of that stream) would not be exact
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, collate_fn=collate_windows,
                                         num_workers=num_workers, pin_memory=pin_memory,
                                         generator=torch.Generator().manual_seed(seed), **extra)
    return WindowLoader(loader, sampler, dataset)


# ---- the model a recipe encodes with -----------------------------------------------------------

def recipe_encoder(recipe, device: str = "auto"):
    """The model whose autoencoder `train(recipe)` uses for its model phases, so the shards this
    encodes are the ones training finds: the autoencoder trained in OUTPUT/train_state.pt,
    `autoencoder.init_from`'s, or (autoencoder.steps == 0) the one built from the recipe's seed."""
    from midas_cli.devices import pick_device
    from midas_cli.model.checkpoint import build_model, checkpoint_autoencoder

    cfg = recipe.model_config()
    torch.manual_seed(recipe.seed)  # as train() seeds rank 0 before building the model
    model = build_model(cfg).to(pick_device(device)).eval()
    state_path = Path(recipe.output) / "train_state.pt"
    if recipe.autoencoder.init_from:
        model.autoencoder = checkpoint_autoencoder(cfg, recipe.autoencoder.init_from).to(model.device).eval()
    if state_path.exists():
        from midas_cli.training.state import load_train_state

        state = load_train_state(state_path)
        if state["phase"] == "autoencoder":
            raise MidasError(f"{state_path}: the autoencoder is still training (step {state['step']}); "
                             "encode once `midas train` has finished it")
        prefix = "autoencoder."
        model.autoencoder.load_state_dict({k[len(prefix):]: v for k, v in state["model"].items()
                                           if k.startswith(prefix)})
        if "scaling_factor" in state:
            model.autoencoder.dcae.register_to_config(scaling_factor=state["scaling_factor"])
    elif recipe.autoencoder.steps > 0:
        raise MidasError(f"{recipe.output}: the recipe's autoencoder is not trained yet (no train_state.pt); "
                         "run `midas train` first, or pass --checkpoint")
    return model.requires_grad_(False)
