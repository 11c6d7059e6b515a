"""`midas train`: recipes validate, a short run lowers the loss and resumes exactly."""

import numpy as np
import pytest
import torch

from midas_cli.errors import MidasError
from midas_cli.training.recipe import load_recipe, shipped_recipe, shipped_training_recipes


@pytest.mark.parametrize("name", shipped_training_recipes())
def test_shipped_training_recipes_validate(name):
    recipe = load_recipe(name)
    cfg = recipe.model_config()
    assert cfg.tokens_per_frame > 0
    if name == "demo_no_noise":
        assert cfg.noise.sigma_max == 0.0


def test_shipped_judge_and_batch_recipes_validate():
    from midas_cli.cli.batch_cmd import load_batch_recipe
    from midas_cli.evaluation.recipe import load_judge_recipe

    load_judge_recipe(shipped_recipe("judges"))
    jobs = load_batch_recipe(shipped_recipe("render_examples"))
    assert len(jobs) >= 2 and all(j.out.endswith(".mp4") for j in jobs)


def test_the_shipped_demo_checkpoint_has_the_model_recipe_demo_describes():
    """`recipes/demo.yaml` reproduces the shipped checkpoint: the same model config (its
    components' weights are referenced from the checkpoint's own sub-folders)."""
    import json

    from midas_cli.model.checkpoint import demo_checkpoint_path
    from midas_cli.model.config import MidasConfig

    def plain(cfg):  # tuples and lists alike, as config.json stores them
        return json.loads(json.dumps(cfg.to_dict()))

    shipped = plain(MidasConfig.load(demo_checkpoint_path() / "config.json"))
    demo = load_recipe("demo")
    recipe = plain(demo.sampled_config(demo.model_config()))
    for cfg in (shipped, recipe):
        for part in ("autoencoder", "audio", "text"):
            cfg[part].pop("pretrained", None)
        cfg["autoencoder"].pop("scaling_factor", None)  # measured on the data when it is trained
    assert shipped == recipe


@pytest.mark.parametrize("override, field", [
    ("train.batch_size=eight", "train.batch_size"),
    ("train.bogus=1", "bogus"),
    ("autoencoder.lr=[1]", "autoencoder.lr"),
    ("model_overrides={backbone.hidden: 3}", "backbone.hidden"),
    ("train.rollout=1.5", "train.rollout"),
    ("train.rollout_passes=0", "train.rollout_passes"),
    ("train.change_weight=-1", "train.change_weight"),
    ("train.sequence_noise=1.5", "train.sequence_noise"),
    ("train.foreign_context=-0.1", "train.foreign_context"),
    ("train.head_text_dropout=1.0", "train.head_text_dropout"),
    ("train.head_text_dropout=0.1", "train.head_text_dropout: needs a model with text_in_head"),
    ("decoder.latent_noise=-1", "decoder"),
    ("decoder.mouth_weight=-1", "edge_weight and mouth_weight >= 0"),
    ("train.mouth_weight=-1", "train.mouth_weight: must be >= 0"),
    ("train.listening_weight=-1", "train.listening_weight: must be >= 0"),
    ("decoder.rollout_share=1.5", "decoder.rollout_share"),
    ("autoencoder.mouth_weight=-1", "autoencoder: edge_weight and mouth_weight must be"),
    ("decoder.steps=x", "decoder.steps"),
    ("sampling={backbone.hidden_size: 3}", "sampling: backbone.hidden_size: not an inference setting"),
    ("sampling={head.temperature: -1}", "head.temperature"),
])
def test_a_wrong_recipe_field_fails_with_its_name(override, field):
    with pytest.raises(MidasError, match=field.replace(".", r"\.")):
        load_recipe("demo_base", [override])


def test_the_listening_weight_needs_log_mel_audio_features():
    load_recipe("demo_base", ["train.listening_weight=1.0"])
    with pytest.raises(MidasError, match=r"train\.listening_weight: finds listening frames by the log-mel"):
        load_recipe("demo_base", ["train.listening_weight=1.0", "model_overrides={audio.kind: whisper}"])


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    from midas_cli.synth.dataset import write_dataset

    out = tmp_path_factory.mktemp("data")
    write_dataset(out, clips=3, seconds=3.0, seed=0, size=64, progress=False)
    return out


class Killed(Exception):
    """A training run stopped from its log callback, as a kill would stop it."""


def _kill_at(prefix: str):
    def log(msg):
        if msg.startswith(prefix):
            raise Killed
    return log


def _recipe(data, output, steps, extra=()):
    return load_recipe("demo_base", [f"data.dir={data}", "model=tiny", f"output={output}", "autoencoder.steps=10",
                                "autoencoder.batch_size=4", "train.batch_size=2", f"train.steps={steps}",
                                "train.warmup=5", "train.lr=0.003", "checkpoint_every=10",
                                "train.log_every=5", *extra])


def test_short_training_lowers_the_loss_and_resumes_exactly(tiny_data, tmp_path):
    from midas_cli.model.checkpoint import load_model
    from midas_cli.training.loop import train

    logs = []
    # validation at every checkpoint must not move the training RNG: run b has none, same weights
    straight = train(_recipe(tiny_data, tmp_path / "a", 60, ["eval.cases=1", "eval.seconds=1.0"]), log=logs.append)
    losses = [float(m.split("loss ")[1].split()[0]) for m in logs if m.startswith("model step")]
    assert losses[-1] < losses[0] * 0.8, losses
    assert (straight / "checkpoint" / "model.safetensors").exists()
    load_model(straight / "checkpoint")  # loadable by every command
    import json

    scores = [json.loads(line) for line in (straight / "eval.jsonl").read_text().splitlines()]
    assert [s["step"] for s in scores] == [10, 20, 30, 40, 50, 60] and "lip_sync_acc" in scores[-1]

    # killed at step 35 (its last checkpoint: step 30), then started again with the same recipe
    with pytest.raises(Killed):
        train(_recipe(tiny_data, tmp_path / "b", 60, ["eval=null"]), log=_kill_at("model step 35/"))
    state = torch.load(tmp_path / "b" / "train_state.pt", weights_only=True)
    assert state["phase"] == "model" and state["step"] == 30
    resumed_logs = []
    train(_recipe(tiny_data, tmp_path / "b", 60, ["eval=null"]), log=resumed_logs.append)
    assert any("resuming: phase model, step 30" in m for m in resumed_logs)
    a = torch.load(tmp_path / "a" / "train_state.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "train_state.pt", weights_only=True)
    assert a["step"] == b["step"] == 60
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k


def test_sampling_settings_reach_the_saved_checkpoint_and_nothing_in_training(tiny_data, tmp_path):
    """A recipe's `sampling` is written into the checkpoint's config only: the weights and the
    evaluations during training are those of the same recipe without it."""
    import json

    from midas_cli.model.checkpoint import load_model
    from midas_cli.training.loop import train

    common = ["eval.cases=1", "eval.seconds=1.0"]
    plain = train(_recipe(tiny_data, tmp_path / "a", 10, common), log=lambda m: None)
    cooled = train(_recipe(tiny_data, tmp_path / "b", 10, [*common, "sampling={head.temperature: 0.0}"]),
                   log=lambda m: None)
    a = torch.load(plain / "train_state.pt", weights_only=True)["model"]
    b = torch.load(cooled / "train_state.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert (plain / "eval.jsonl").read_text() and (plain / "eval.jsonl").read_text() == (cooled / "eval.jsonl").read_text()
    assert json.loads((plain / "checkpoint" / "config.json").read_text())["head"]["temperature"] == 1.0
    assert json.loads((cooled / "checkpoint" / "config.json").read_text())["head"]["temperature"] == 0.0
    assert load_model(cooled / "checkpoint").cfg.head.temperature == 0.0


def test_edge_weighted_loss_puts_weight_on_edges():
    """The same error costs more on an edge (a lip line) than on a flat area (a cheek)."""
    from midas_cli.training.objective import reconstruction_loss

    x = torch.zeros(1, 3, 32, 32)
    x[..., 16:, :] = 1.0  # one horizontal edge at row 16
    z = torch.zeros(1, 4, 2, 2)
    on_edge, flat = x.clone(), x.clone()
    on_edge[..., 15:17, 8:12] += 0.3
    flat[..., 4:6, 8:12] += 0.3
    plain = [reconstruction_loss(r, x, z).item() for r in (on_edge, flat)]
    weighted = [reconstruction_loss(r, x, z, edge_weight=5.0).item() for r in (on_edge, flat)]
    assert plain[0] == pytest.approx(plain[1])
    assert weighted[0] > 2 * weighted[1]


def test_the_mouth_weight_map_sits_where_the_renderer_draws_the_mouth():
    """For random head poses, the map's peak is within a few pixels of the pixels that change
    when only the mouth opens, and far from the eyes."""
    from midas_cli.synth.render import render_frame
    from midas_cli.training.objective import mouth_weight_map

    rng = np.random.default_rng(0)
    poses = np.column_stack([rng.uniform(-25, 25, 6), rng.uniform(-12, 12, 6), rng.uniform(-8, 8, 6),
                             rng.uniform(-0.06, 0.06, 6), rng.uniform(-0.04, 0.04, 6), rng.uniform(-0.1, 0.1, 6)])
    maps = mouth_weight_map(torch.tensor(poses, dtype=torch.float32), 128, 128)[:, 0].numpy()
    for pose, m in zip(poses, maps):
        ident = int(rng.integers(0, 1000))
        change = np.abs(render_frame(ident, 3, 0, pose, 128).astype(float)
                        - render_frame(ident, 0, 0, pose, 128).astype(float)).sum(-1)
        ys, xs = np.nonzero(change > 30)
        peak = np.unravel_index(m.argmax(), m.shape)
        assert abs(peak[0] - ys.mean()) < 5 and abs(peak[1] - xs.mean()) < 5, (pose, peak, ys.mean(), xs.mean())
        assert m[ys, xs].mean() > 0.5 and m.mean() < 0.05


def test_the_mouth_weighted_loss_puts_weight_on_the_mouth():
    """The same error costs more inside the mouth map than outside it, and nothing changes
    without a map or at weight 0."""
    from midas_cli.training.objective import mouth_weight_map, reconstruction_loss

    x, z = torch.rand(1, 3, 128, 128), torch.zeros(1, 8, 8, 8)
    mouth = mouth_weight_map(torch.zeros(1, 6), 128, 128)
    cy, cx = np.unravel_index(mouth[0, 0].argmax().item(), (128, 128))
    on_mouth, elsewhere = x.clone(), x.clone()
    on_mouth[..., cy - 2:cy + 2, cx - 4:cx + 4] += 0.3
    elsewhere[..., 10:14, 20:28] += 0.3
    plain = [reconstruction_loss(r, x, z).item() for r in (on_mouth, elsewhere)]
    assert [reconstruction_loss(r, x, z, mouth=mouth, mouth_weight=0.0).item()
            for r in (on_mouth, elsewhere)] == plain
    weighted = [reconstruction_loss(r, x, z, mouth=mouth, mouth_weight=10.0).item() for r in (on_mouth, elsewhere)]
    assert plain[0] == pytest.approx(plain[1], rel=1e-3)
    assert weighted[0] > 5 * weighted[1]


def test_the_autoencoder_phase_uses_the_mouth_weight_with_crops(tiny_data, tmp_path):
    """`autoencoder.mouth_weight` reaches the loss (the autoencoder differs from the same run
    without it) and works with random crops (the mouth map is cropped with the frames)."""
    from midas_cli.model.checkpoint import load_model
    from midas_cli.training.loop import train

    common = ["eval=null", "autoencoder.crop=32", "autoencoder.log_every=5"]
    plain = train(_recipe(tiny_data, tmp_path / "plain", 2, common), log=lambda m: None)
    mouth = train(_recipe(tiny_data, tmp_path / "mouth", 2, [*common, "autoencoder.mouth_weight=8.0"]),
                  log=lambda m: None)
    a, b = (load_model(d / "checkpoint").autoencoder.state_dict() for d in (plain, mouth))
    assert any(not torch.equal(a[k], b[k]) for k in a)


def _tiny_training_batch(batch: int = 2, text_in_head: bool = False):
    """A tiny model whose head already depends on its condition (adaLN-Zero starts it blind),
    and one random batch of `batch` sequences of 2 chunks."""
    from midas_cli.model.config import preset
    from midas_cli.model.midas import ChunkFeatures, MidasModel

    cfg = preset("tiny")
    cfg.text_in_head = text_in_head
    torch.manual_seed(0)
    model = MidasModel(cfg).train()
    with torch.no_grad():
        for p in model.head.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    b, k, f, n, c = batch, 2, cfg.frames_per_chunk, cfg.tokens_per_frame, cfg.latent_channels
    ref, frames = torch.randn(b, n, c), torch.randn(b, k * f, n, c)
    a_dim = model.projector.audio[0].in_features
    feats = ChunkFeatures(audio=torch.randn(b, k, f, a_dim), pose=torch.randn(b, k, f, 12),
                          text=model.encode_texts(["smile"] * (b * k)).reshape(b, k, -1),
                          listen=torch.randn(b, k, f, a_dim))
    return model, ref, frames, feats


def _spy_on_the_flow_loss(monkeypatch) -> dict:
    """Wraps the objective's flow loss; the dict's "per_token" holds the last call's (·, N)
    per-token losses (None for a reduced call)."""
    import midas_cli.training.objective as objective

    seen, real = {}, objective.flow_matching_loss

    def spy(*args, **kwargs):
        out = real(*args, **kwargs)
        seen["per_token"] = out.detach().mean(-1) if out.dim() else None
        return out

    monkeypatch.setattr(objective, "flow_matching_loss", spy)
    return seen


def test_the_model_phase_mouth_map_follows_the_head_on_the_latent_grid():
    """`frame_mouth_tokens`: one map per frame, on the token grid row by row; its peak sits in the
    lower middle of a frontal face and moves right with the head (pose x)."""
    from midas_cli.conditions.pose import pose_features
    from midas_cli.training.objective import frame_mouth_tokens

    poses = np.zeros((12, 6), np.float32)
    poses[6:, 3] = 0.15  # the second chunk's head moved right
    feats = pose_features(poses).reshape(1, 2, 6, 12)
    mouth = frame_mouth_tokens(feats, (8, 8))
    assert mouth.shape == (1, 12, 64) and float(mouth.min()) >= 0 and float(mouth.max()) <= 1
    rows, cols = mouth[0].argmax(-1) // 8, mouth[0].argmax(-1) % 8
    assert (rows[:6] >= 4).all() and ((cols[:6] == 3) | (cols[:6] == 4)).all()
    assert (cols[6:] > cols[:6]).all()


def test_mouth_weight_puts_the_model_loss_on_the_mouth_tokens(monkeypatch):
    """A mouth map on token j alone, weight m: token j's loss weighs (1 + m) N / (N + m) and every
    other token N / (N + m); m = 0 or no map is the plain mean; with change weights, m × map adds
    to them before the renormalisation. Through the phase's loss module,
    `mouth_weight` brings the map of each frame's own pose."""
    from midas_cli.training.objective import SequenceLoss, change_weights, frame_mouth_tokens, sequence_loss
    from midas_cli.training.recipe import ModelTraining

    model, ref, frames, feats = _tiny_training_batch()
    b, t, n = frames.shape[:3]
    j, m = 5, 3.0
    mouth = torch.zeros(b, t, n)
    mouth[..., j] = 1.0
    prev = torch.cat([ref[:, None], frames[:, :-1]], dim=1)
    seen = _spy_on_the_flow_loss(monkeypatch)
    weighted = sequence_loss(model, ref, frames, prev, feats, torch.Generator().manual_seed(3),
                             mouth=mouth, mouth_weight=m)
    w = torch.full((n,), n / (n + m))
    w[j] = (1 + m) * n / (n + m)
    per_token = seen["per_token"]
    assert torch.allclose(weighted, (per_token * w).mean(), rtol=1e-5)
    plain = sequence_loss(model, ref, frames, prev, feats, torch.Generator().manual_seed(3), mouth=mouth)
    assert torch.allclose(plain, per_token.mean(), rtol=1e-5) and not torch.allclose(weighted, plain)
    moved = prev.clone()
    moved[:, :, 2] += 1.0  # with change weights the map's weight adds to theirs
    both = sequence_loss(model, ref, frames, moved, feats, torch.Generator().manual_seed(3), change_weight=4.0,
                         mouth=mouth, mouth_weight=m)
    w = change_weights(frames, moved, 4.0).view(b, t, n) + m * mouth
    w = w / w.mean(-1, keepdim=True)
    assert torch.allclose(both, (seen["per_token"].view(b, t, n) * w).mean(), rtol=1e-5)

    texts = [["smile"] * 2] * b
    torch.manual_seed(7)
    through_module = SequenceLoss(model)(ref, frames, prev, feats, texts, ModelTraining(mouth_weight=m))
    torch.manual_seed(7)
    expected = sequence_loss(model, ref, frames, prev, feats, mouth=frame_mouth_tokens(feats.pose, model.cfg.latent_grid),
                             mouth_weight=m)
    torch.manual_seed(7)
    without = SequenceLoss(model)(ref, frames, prev, feats, texts, ModelTraining())
    assert torch.allclose(through_module, expected) and not torch.allclose(through_module, without)


def test_listening_frames_are_where_only_the_interlocutor_speaks():
    """Found from the log-mel features alone, they match a synthetic clip's listening truth
    (which the features never saw); a clip without an interlocutor has none."""
    from midas_cli.conditions.audio import LogMelFeatures
    from midas_cli.model.midas import ChunkFeatures
    from midas_cli.synth.clip import make_clip
    from midas_cli.training.objective import listening_frames

    logmel = LogMelFeatures()
    found, truth = [], []
    for seed in range(3):
        clip = make_clip(np.random.default_rng(seed), 16.0, listener=True)
        n = len(clip.listening) // 6 * 6
        own, other = (logmel(a, n).reshape(1, n // 6, 6, -1) for a in (clip.audio, clip.listen_audio))
        found.append(listening_frames(ChunkFeatures(own, torch.zeros(1, n // 6, 6, 12), None, other))[0].numpy())
        truth.append(clip.listening[:n])
    found, truth = np.concatenate(found), np.concatenate(truth)
    assert truth.mean() > 0.1
    assert (found & truth).sum() >= 0.95 * truth.sum() and (found & truth).sum() >= 0.85 * found.sum()
    alone = make_clip(np.random.default_rng(0), 8.0, listener=False)
    own = logmel(alone.audio, 96).reshape(1, 16, 6, -1)
    silent = logmel(np.zeros(1, np.float32), 96).reshape(1, 16, 6, -1)  # the shards' missing listen track
    assert not listening_frames(ChunkFeatures(own, torch.zeros(1, 16, 6, 12), None, silent)).any()
    assert not listening_frames(ChunkFeatures(own, torch.zeros(1, 16, 6, 12), None, None)).any()


def test_listening_weight_adds_to_every_token_of_a_listening_frame(monkeypatch):
    """Weight L on listening frames: their tokens weigh (their normalised weight) + L, the other
    frames' are left as they were (no renormalisation across frames); through the phase's loss
    module, `listening_weight` finds the frames from the batch's own features."""
    from midas_cli.training.objective import SequenceLoss, change_weights, listening_frames, sequence_loss
    from midas_cli.training.recipe import ModelTraining

    model, ref, frames, feats = _tiny_training_batch()
    b, t, n = frames.shape[:3]
    L = 2.0
    listening = torch.zeros(b, t, dtype=torch.bool)
    listening[0, 3:7] = True
    prev = torch.cat([ref[:, None], frames[:, :-1]], dim=1)
    seen = _spy_on_the_flow_loss(monkeypatch)
    weighted = sequence_loss(model, ref, frames, prev, feats, torch.Generator().manual_seed(3),
                             listening=listening, listening_weight=L)
    per_token = seen["per_token"].view(b, t, n)
    assert torch.allclose(weighted, (per_token * (1 + L * listening.float()[..., None])).mean(), rtol=1e-5)
    plain = sequence_loss(model, ref, frames, prev, feats, torch.Generator().manual_seed(3), listening=listening)
    assert torch.allclose(plain, per_token.mean(), rtol=1e-5) and not torch.allclose(weighted, plain)
    moved = prev.clone()
    moved[:, :, 2] += 1.0
    both = sequence_loss(model, ref, frames, moved, feats, torch.Generator().manual_seed(3), change_weight=4.0,
                         listening=listening, listening_weight=L)
    w = change_weights(frames, moved, 4.0).view(b, t, n) + L * listening.float()[..., None]
    assert torch.allclose(both, (seen["per_token"].view(b, t, n) * w).mean(), rtol=1e-5)

    # own track loud throughout the first sequence's first chunk, silent after; the other's loud
    feats.audio = torch.full_like(feats.audio, -1.0)
    feats.audio[0, 0] = 1.0
    feats.listen = torch.full_like(feats.listen, 1.0)
    assert listening_frames(feats).tolist() == [[False] * 6 + [True] * 6, [True] * 12]
    texts = [["smile"] * 2] * b
    torch.manual_seed(7)
    through_module = SequenceLoss(model)(ref, frames, prev, feats, texts, ModelTraining(listening_weight=L))
    torch.manual_seed(7)
    expected = sequence_loss(model, ref, frames, prev, feats, listening=listening_frames(feats), listening_weight=L)
    torch.manual_seed(7)
    without = SequenceLoss(model)(ref, frames, prev, feats, texts, ModelTraining())
    assert torch.allclose(through_module, expected) and not torch.allclose(through_module, without)


def test_rollout_history_is_remade_by_the_model_without_gradients():
    """The re-made history: slot 0 keeps its true input, later slots hold the model's own frames
    (they change with the model's weights), no gradient flows through them, the mode is restored."""
    from midas_cli.training.history import resample_history

    model, ref, frames, feats = _tiny_training_batch()
    prev = torch.cat([ref[:, None], frames[:, :-1]], dim=1)
    remade = resample_history(model, ref, frames, prev, feats, passes=2, generator=torch.Generator().manual_seed(1))
    assert model.training and not remade.requires_grad and remade.shape == prev.shape
    assert torch.equal(remade[:, 0], prev[:, 0])
    assert (remade[:, 1:] - prev[:, 1:]).abs().mean() > 0.05
    with torch.no_grad():
        for p in model.head.parameters():
            p.mul_(0.5)
    other = resample_history(model, ref, frames, prev, feats, passes=2, generator=torch.Generator().manual_seed(1))
    assert not torch.allclose(other, remade)


def test_rollout_history_is_causal_and_exact_for_the_first_passes():
    """Re-made frame j depends on true frames up to j only; and with as many passes as frames it
    is the frame-by-frame rollout, so one more pass changes nothing."""
    from midas_cli.training.history import resample_history

    model, ref, frames, feats = _tiny_training_batch()
    model.eval()
    t = frames.shape[1]
    prev = torch.cat([ref[:, None], frames[:, :-1]], dim=1)

    def remake(fr, passes):
        p = torch.cat([ref[:, None], fr[:, :-1]], dim=1)
        return resample_history(model, ref, fr, p, feats, passes=passes, generator=torch.Generator().manual_seed(4))

    base = remake(frames, 3)
    later = frames.clone()
    later[:, 7:] += 1.0  # true frames 7.. changed: re-made frames 0..6 (slots 1..7) must not move
    moved = remake(later, 3)
    assert torch.equal(moved[:, :8], base[:, :8]) and not torch.allclose(moved[:, 8:], base[:, 8:])
    assert torch.allclose(remake(frames, t), remake(frames, t + 1), atol=1e-5)
    assert not torch.allclose(remake(frames, 1), remake(frames, t), atol=1e-4)
    del prev


def test_loss_with_rollout_is_the_flow_loss_on_the_remade_history():
    """rollout=1: the loss is the plain flow loss, on true targets, with the re-made context;
    the change weights still measure against the true previous frames; gradients reach the head."""
    from midas_cli.training.history import resample_history
    from midas_cli.training.objective import SequenceLoss as _LossModule
    from midas_cli.training.objective import sequence_loss
    from midas_cli.training.recipe import ModelTraining

    model, ref, frames, feats = _tiny_training_batch()
    prev = torch.cat([ref[:, None], frames[:, :-1]], dim=1)
    texts = [["smile"] * 2] * 2
    module = _LossModule(model)
    tr = ModelTraining(rollout=1.0, rollout_passes=2, change_weight=4.0)
    torch.manual_seed(7)
    loss = module(ref, frames, prev, feats, texts, tr)
    torch.manual_seed(7)
    torch.rand(2)  # the draw that picked both sequences
    remade = resample_history(model, ref, frames, prev, feats, 2, 0.6)
    expected = sequence_loss(model, ref, frames, remade, feats, change_weight=4.0, weight_from=prev)
    assert torch.allclose(loss, expected)
    torch.manual_seed(7)
    plain = module(ref, frames, prev, feats, texts, ModelTraining(change_weight=4.0))
    assert not torch.allclose(loss, plain)
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.head.parameters())


def test_a_foreign_context_is_what_the_model_sees_while_the_change_weights_measure_the_true_frames():
    """A window given another stretch's context (`foreign_context`): the loss is the flow loss
    with that context, the change weights still measured against the window's own previous
    frames (slots 1.. are its frames 0..T-2)."""
    from midas_cli.training.objective import SequenceLoss as _LossModule
    from midas_cli.training.objective import sequence_loss
    from midas_cli.training.recipe import ModelTraining

    model, ref, frames, feats = _tiny_training_batch()
    own = torch.cat([ref[:, None], frames[:, :-1]], dim=1)
    foreign = torch.randn_like(frames)
    tr = ModelTraining(change_weight=4.0)
    torch.manual_seed(7)
    loss = _LossModule(model)(ref, frames, foreign, feats, [["smile"] * 2] * 2, tr)
    weight_from = torch.cat([foreign[:, :1], frames[:, :-1]], dim=1)
    torch.manual_seed(7)
    expected = sequence_loss(model, ref, frames, foreign, feats, change_weight=4.0, weight_from=weight_from)
    torch.manual_seed(7)
    weighed_by_foreign = sequence_loss(model, ref, frames, foreign, feats, change_weight=4.0)
    torch.manual_seed(7)
    own_context = sequence_loss(model, ref, frames, own, feats, change_weight=4.0)
    assert torch.allclose(loss, expected)
    assert not torch.allclose(loss, weighed_by_foreign) and not torch.allclose(loss, own_context)


def test_change_weight_puts_the_loss_on_the_tokens_that_moved(monkeypatch):
    """Only token j differs from the previous frame: with change_weight a, token j's loss
    weighs (1 + a*N) / (1 + a) and every other token 1 / (1 + a); a = 0 is the plain mean."""
    from midas_cli.training.objective import sequence_loss

    model, ref, frames, feats = _tiny_training_batch()
    n, j, a = frames.shape[2], 3, 4.0
    prev = frames.clone()
    prev[:, :, j] += 1.0
    seen = _spy_on_the_flow_loss(monkeypatch)
    weighted = sequence_loss(model, ref, frames, prev, feats, torch.Generator().manual_seed(3), change_weight=a)
    w = torch.full((n,), 1 / (1 + a))
    w[j] = (1 + a * n) / (1 + a)
    assert torch.allclose(weighted, (seen["per_token"] * w).mean(), rtol=1e-5)
    per_token = seen["per_token"]
    plain = sequence_loss(model, ref, frames, prev, feats, torch.Generator().manual_seed(3))
    assert torch.allclose(plain, per_token.mean(), rtol=1e-5)  # same draws, uniform weights
    assert torch.allclose(plain, sequence_loss(model, ref, frames, prev, feats, torch.Generator().manual_seed(3),
                                                     change_weight=0.0))
    assert not torch.allclose(weighted, plain)
    weighted.backward()
    assert any(p.grad is not None for p in model.head.parameters())


def test_change_fade_leaves_a_frame_at_sigma_max_uniform_and_one_at_zero_fully_weighted():
    """`change_fade`: the change weight applies in full to a frame whose context is clean, not at
    all to one at σ_max, linearly between; the sampled context noise decides which."""
    from midas_cli.training.objective import change_weights, sequence_loss

    b, t, n, c, j, a = 1, 3, 6, 4, 2, 4.0
    frames = torch.zeros(b, t, n, c)
    prev = frames.clone()
    prev[:, :, j] += 1.0
    fade = torch.tensor([[1.0, 0.0, 0.5]])
    w = change_weights(frames, prev, a, fade).reshape(t, n)
    full = change_weights(frames, prev, a).reshape(t, n)
    assert torch.allclose(w[0], full[0]) and torch.allclose(w[1], torch.ones(n))
    assert 1 < w[2, j] < full[0, j]  # half-way
    assert torch.allclose(w.mean(-1), torch.ones(t))

    model, ref, frames, feats = _tiny_training_batch()
    prev = frames.clone()
    prev[:, :, 3] += 1.0
    model.noise.sample_buckets = lambda shape, device, generator=None: torch.full(
        shape, model.cfg.noise.num_buckets - 1, dtype=torch.long)  # every context at σ_max
    kw = dict(change_weight=a)
    faded = sequence_loss(model, ref, frames, prev, feats, torch.Generator().manual_seed(3), change_fade=True, **kw)
    plain = sequence_loss(model, ref, frames, prev, feats, torch.Generator().manual_seed(3))
    weighted = sequence_loss(model, ref, frames, prev, feats, torch.Generator().manual_seed(3), **kw)
    assert torch.allclose(faded, plain, rtol=1e-5) and not torch.allclose(weighted, plain)


def test_sequence_noise_gives_every_context_frame_of_a_drawn_sequence_one_level():
    from midas_cli.training.objective import sequence_loss

    model, ref, frames, feats = _tiny_training_batch()
    model.noise.cfg.sigma_max = 2.0  # the tiny preset's levels, made non-zero for this test
    model.noise.levels = torch.linspace(0.0, 2.0, model.noise.cfg.num_buckets)
    seen = []
    real = model.noise.corrupt
    model.noise.corrupt = lambda x, buckets, generator=None: (seen.append(buckets.clone()), real(x, buckets, generator))[1]
    for share in (0.0, 1.0):
        sequence_loss(model, ref, frames, frames.clone(), feats, torch.Generator().manual_seed(4), sequence_noise=share)
    per_frame, per_sequence = seen
    assert (per_sequence == per_sequence[:, :1]).all()
    assert (per_frame != per_frame[:, :1]).any(dim=1).all()  # drawn frame by frame otherwise
    assert torch.equal(per_sequence[:, 0], per_frame[:, 0])  # the sequence's level is its first frame's draw


def test_head_text_dropout_leaves_the_text_out_of_the_drawn_frames_head_conditions(monkeypatch):
    """head_text_dropout p: each frame's head condition is the backbone's hidden state plus the
    text (kept) or the hidden state alone (dropped), for about a share p of the frames; p = 0
    draws nothing and drops nothing."""
    import midas_cli.training.objective as objective
    from midas_cli.training.objective import sequence_loss

    model, ref, frames, feats = _tiny_training_batch(batch=4, text_in_head=True)
    torch.nn.init.normal_(model.head_text.weight, std=0.5)
    prev = torch.cat([ref[:, None], frames[:, :-1]], dim=1)
    conds = []
    real = objective.flow_matching_loss
    monkeypatch.setattr(objective, "flow_matching_loss",
                        lambda head, x0, cond, *a, **kw: (conds.append(cond.detach().clone()), real(head, x0, cond, *a, **kw))[1])
    full = sequence_loss(model, ref, frames, prev, feats, torch.Generator().manual_seed(3))
    with torch.no_grad():
        weight = model.head_text.weight.clone()
        model.head_text.weight.zero_(), model.head_text.bias.zero_()
    sequence_loss(model, ref, frames, prev, feats, torch.Generator().manual_seed(3))
    with torch.no_grad():
        model.head_text.weight.copy_(weight)
    half = sequence_loss(model, ref, frames, prev, feats, torch.Generator().manual_seed(3), head_text_dropout=0.5)
    assert torch.equal(sequence_loss(model, ref, frames, prev, feats, torch.Generator().manual_seed(3),
                                     head_text_dropout=0.0), full)
    with_text, without, mixed = conds[0], conds[1], conds[2]
    assert (with_text - without).abs().amax(dim=(1, 2)).min() > 1e-3  # the text reaches every frame
    kept = (mixed == with_text).flatten(1).all(1)
    dropped = (mixed == without).flatten(1).all(1)
    assert bool((kept ^ dropped).all())  # every frame is one or the other
    assert 0.2 < dropped.float().mean() < 0.8, dropped.float().mean()
    half.backward()
    assert model.head_text.weight.grad.abs().sum() > 0


def test_an_unreadable_training_state_is_a_one_line_error(tiny_data, tmp_path):
    from midas_cli.training.loop import train

    out = tmp_path / "run"
    out.mkdir()
    (out / "train_state.pt").write_bytes(b"not a torch file")
    with pytest.raises(MidasError, match=r"train_state\.pt: not a readable training state .*delete it"):
        train(_recipe(tiny_data, out, 5, ["eval=null"]), log=lambda m: None)


def test_head_repeats_draw_the_flow_loss_several_times_per_backbone_pass(monkeypatch):
    """head_repeats k: the head sees k copies of each frame's condition, each with its own
    time and noise draw; k = 1 is the plain loss."""
    import midas_cli.training.objective as objective
    from midas_cli.training.objective import sequence_loss

    model, ref, frames, feats = _tiny_training_batch()
    prev = torch.cat([ref[:, None], frames[:, :-1]], dim=1)
    calls = []
    real = objective.flow_matching_loss

    def spy(head, x0, cond, *args, **kwargs):
        calls.append((x0.shape[0], cond.clone()))
        return real(head, x0, cond, *args, **kwargs)

    monkeypatch.setattr(objective, "flow_matching_loss", spy)
    plain = sequence_loss(model, ref, frames, prev, feats, torch.Generator().manual_seed(3))
    assert torch.equal(plain, sequence_loss(model, ref, frames, prev, feats, torch.Generator().manual_seed(3),
                                            head_repeats=1))
    repeated = sequence_loss(model, ref, frames, prev, feats, torch.Generator().manual_seed(3), head_repeats=3,
                             change_weight=2.0)
    bt = frames.shape[0] * frames.shape[1]
    assert calls[0][0] == bt and calls[-1][0] == 3 * bt
    cond = calls[-1][1]
    assert torch.equal(cond[:bt], cond[bt:2 * bt]) and torch.equal(cond[:bt], cond[2 * bt:])
    assert not torch.allclose(repeated, plain)
    repeated.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.backbone.parameters())


def _tiny_base_recipe(data, tmp_path, model_steps=5):
    """A small base recipe (5 autoencoder steps, then `model_steps` model steps, checkpointed at
    the end) for the recipes on a base."""
    import yaml

    path = tmp_path / "base.yaml"
    path.write_text(yaml.safe_dump({
        "model": "tiny", "data": {"dir": str(data)}, "output": str(tmp_path / "base"),
        "autoencoder": {"steps": 5, "batch_size": 2}, "train": {"steps": model_steps, "batch_size": 2, "warmup": 2},
        "eval": None, "checkpoint_every": model_steps}))
    return path


def test_a_recipe_on_a_base_fine_tunes_its_checkpoint_and_resumes_exactly(tiny_data, tmp_path):
    """`base`: the base recipe is trained first and the recipe starts from its checkpoint; a
    fine-tuning phase (here with the reference path and re-made history) killed mid-way resumes
    to the same weights as a run that was never stopped."""
    import yaml

    from midas_cli.model.checkpoint import load_model
    from midas_cli.training.loop import train

    base_file = _tiny_base_recipe(tiny_data, tmp_path, model_steps=10)

    def child(out, extra=()):
        path = tmp_path / f"{out}.yaml"
        path.write_text(yaml.safe_dump({
            "base": str(base_file), "model": "tiny", "data": {"dir": str(tiny_data)}, "output": str(tmp_path / out),
            "model_overrides": {"reference_in_slots": True, "noise.sigma_max": 2.0},
            "autoencoder": {"steps": 0}, "train": {"steps": 0},
            "finetune": [{"steps": 20, "batch_size": 2, "warmup": 2, "lr": 0.003, "rollout": 0.5,
                          "log_every": 5}],
            "eval": None, "checkpoint_every": 10}))
        return load_recipe(path, list(extra))

    logs = []
    straight = train(child("a"), log=logs.append)
    assert any("starting from the base recipe's checkpoint" in m for m in logs)
    assert any("kept as initialised: ref_in.bias, ref_in.weight" in m for m in logs)
    base_model = load_model(tmp_path / "base" / "checkpoint")
    tuned = load_model(straight / "checkpoint")
    assert tuned.cfg.reference_in_slots and tuned.ref_in.weight.abs().sum() > 0
    assert any(not torch.equal(p, q) for p, q in zip(base_model.head.parameters(), tuned.head.parameters()))

    with pytest.raises(Killed):
        train(child("b"), log=_kill_at("finetune1 step 15/"))
    state = torch.load(tmp_path / "b" / "train_state.pt", weights_only=True)
    assert state["phase"] == "finetune1" and state["step"] == 10
    train(child("b"), log=lambda m: None)
    a = torch.load(tmp_path / "a" / "train_state.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "train_state.pt", weights_only=True)
    assert a["step"] == b["step"] == 20
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k


def test_a_recipe_on_a_base_can_fine_tune_the_bases_autoencoder_and_encodes_the_data_anew(tiny_data, tmp_path):
    """`autoencoder.steps` on a base: the steps start from the base's autoencoder (not a fresh
    one), its latents are re-measured and re-encoded, and the model phases start from the base's
    model."""
    import yaml

    from midas_cli.model.checkpoint import load_model
    from midas_cli.training.loop import train

    base_file = _tiny_base_recipe(tiny_data, tmp_path)

    def child(out, ae_lr):
        path = tmp_path / f"{out}.yaml"
        path.write_text(yaml.safe_dump({
            "base": str(base_file), "model": "tiny", "data": {"dir": str(tiny_data)}, "output": str(tmp_path / out),
            "autoencoder": {"steps": 4, "batch_size": 2, "lr": ae_lr}, "train": {"steps": 0},
            "finetune": [{"steps": 3, "batch_size": 2, "warmup": 1, "lr": 1e-12}],
            "eval": None, "checkpoint_every": 5}))
        return load_recipe(path)

    def encoded_into(logs):
        return [m.split(" into ")[1] for m in logs if m.startswith("encoding")]

    base_logs, still_logs, tuned_logs = [], [], []
    train(load_recipe(base_file), log=base_logs.append)
    still = train(child("still", 1e-12), log=still_logs.append)  # lr ~0: the base's autoencoder as it was
    tuned = train(child("tuned", 3e-3), log=tuned_logs.append)
    base_model, still_model, tuned_model = (load_model(p / "checkpoint") for p in (tmp_path / "base", still, tuned))

    base_ae, still_ae, tuned_ae = (m.autoencoder.state_dict() for m in (base_model, still_model, tuned_model))
    assert all(torch.allclose(base_ae[k], still_ae[k], atol=1e-6) for k in base_ae)
    assert any(not torch.allclose(base_ae[k], tuned_ae[k], atol=1e-4) for k in base_ae)
    assert tuned_model.autoencoder.scaling_factor != base_model.autoencoder.scaling_factor
    # the data is encoded with the fine-tuned encoder, into a folder of its own
    assert encoded_into(tuned_logs) and encoded_into(tuned_logs)[0] not in encoded_into(base_logs)
    # the model phases start from the base's model (lr ~0 leaves it where it started)
    for p, q in zip(base_model.backbone.parameters(), tuned_model.backbone.parameters()):
        assert torch.allclose(p, q, atol=1e-6)


def test_a_recipe_on_a_base_can_train_a_wider_autoencoder_and_move_the_bases_model_to_it(tiny_data, tmp_path):
    """`autoencoder.from_base: false` with a wider latent and `train.init_resized`: the autoencoder
    is trained from scratch at the new width (not loaded from the base, which could not load), and
    the model starts from the base's, all but the latent's in/out layers."""
    import yaml

    from midas_cli.model.checkpoint import load_model
    from midas_cli.model.config import preset
    from midas_cli.training.loop import train

    base_file = _tiny_base_recipe(tiny_data, tmp_path)
    width = 2 * int(preset("tiny").autoencoder.architecture.get("latent_channels", 32))
    wide_file = tmp_path / "wide.yaml"
    wide = {"base": str(base_file), "model": "tiny", "data": {"dir": str(tiny_data)},
            "model_overrides": {"autoencoder.architecture.latent_channels": width},
            "output": str(tmp_path / "wide"),
            "autoencoder": {"from_base": False, "steps": 3, "batch_size": 2, "log_every": 1},
            "train": {"steps": 0, "init_resized": True}, "eval": None, "checkpoint_every": 5}
    wide_file.write_text(yaml.safe_dump(wide))
    logs = []
    out = train(load_recipe(wide_file), log=logs.append)
    assert not any(m.startswith("autoencoder from") for m in logs)
    assert any(m.startswith("autoencoder step 3/") for m in logs)
    base_model, wide_model = load_model(tmp_path / "base" / "checkpoint"), load_model(out / "checkpoint")
    assert wide_model.cfg.autoencoder.architecture["latent_channels"] == width
    old, new = base_model.trainable_state_dict(), wide_model.trainable_state_dict()
    resized = [k for k in new if new[k].shape != old[k].shape]
    assert resized and all(torch.equal(new[k], old[k]) for k in new if k not in resized)

    # without steps there would be no autoencoder at all: refused when the recipe is read
    wide["autoencoder"]["steps"] = 0
    wide_file.write_text(yaml.safe_dump(wide))
    with pytest.raises(MidasError, match=r"wide\.yaml: autoencoder\.from_base: false leaves the autoencoder untrained"):
        load_recipe(wide_file)


def test_autoencoder_init_from_a_checkpoint_without_one_is_a_one_line_error(tiny_data, tmp_path):
    from midas_cli.training.loop import train

    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "config.json").write_text("{}")  # a checkpoint folder whose autoencoder/ is missing
    with pytest.raises(MidasError, match=r"autoencoder\.init_from: .*ckpt/autoencoder is not an autoencoder folder"):
        train(_recipe(tiny_data, tmp_path / "run", 10, ["eval=null", f"autoencoder.init_from={ckpt}"]), log=lambda m: None)


def test_the_decoder_step_leaves_the_encoder_without_gradients_and_noises_the_latents():
    from midas_cli.model.autoencoder import FrameAutoencoder, build_dcae
    from midas_cli.model.config import preset
    from midas_cli.training.objective import ReconstructionLoss

    torch.manual_seed(0)
    cfg = preset("tiny").autoencoder
    ae = FrameAutoencoder(build_dcae(cfg), cfg.patch_size)
    x = torch.rand(2, 3, cfg.height, cfg.width) * 2 - 1
    loss, rec = ReconstructionLoss(ae, frozen_encoder=True)(x)
    loss.backward()
    assert all(p.grad is None for p in ae.dcae.encoder.parameters())
    assert all(p.grad is not None for p in ae.dcae.decoder.parameters())
    with torch.no_grad():
        plain = ae.dcae.decode(ae.dcae.encode(x, return_dict=False)[0], return_dict=False)[0]
        noisy = ReconstructionLoss(ae, frozen_encoder=True, latent_noise=0.5)(x)[1]
    assert torch.allclose(rec.detach(), plain)
    assert not torch.allclose(noisy, plain, atol=1e-3)


def test_the_decoder_phase_trains_the_decoder_alone_and_resumes_exactly(tiny_data, tmp_path):
    """`decoder.steps`: after the model phases, only the decoder moves — the encoder (so the
    latents), the latent scale and the model are those of the same run without the phase — its
    reconstruction gets better, and a run killed mid-way resumes to the same weights."""
    from midas_cli.model.autoencoder import images_to_tensor
    from midas_cli.model.checkpoint import load_model
    from midas_cli.training.frames import frame_loader
    from midas_cli.training.loop import train

    dec = ["eval=null", "decoder.steps=20", "decoder.batch_size=2", "decoder.lr=0.003", "decoder.warmup=2",
           "decoder.log_every=5", "decoder.latent_noise=0.1", "decoder.edge_weight=5.0", "decoder.mouth_weight=8.0"]
    without = train(_recipe(tiny_data, tmp_path / "plain", 10, ["eval=null"]), log=lambda m: None)
    logs = []
    straight = train(_recipe(tiny_data, tmp_path / "a", 10, dec), log=logs.append)
    assert any(m.startswith("decoder step 20/20") for m in logs)
    before, after = load_model(without / "checkpoint"), load_model(straight / "checkpoint")
    assert after.autoencoder.scaling_factor == before.autoencoder.scaling_factor
    old, new = before.state_dict(), after.state_dict()
    moved = {k for k in old if not torch.equal(old[k], new[k])}
    assert moved and all(k.startswith("autoencoder.dcae.decoder.") for k in moved), sorted(moved)[:5]

    frames = next(iter(frame_loader(tiny_data, width=64, height=64, batch_size=8, seed=5, steps=1, num_workers=0)))
    x = images_to_tensor(frames)
    with torch.no_grad():
        errors = [(m.autoencoder.dcae(x).sample - x).abs().mean().item() for m in (before, after)]
    assert errors[1] < errors[0] * 0.9, errors

    with pytest.raises(Killed):
        train(_recipe(tiny_data, tmp_path / "b", 10, dec), log=_kill_at("decoder step 15/"))
    state = torch.load(tmp_path / "b" / "train_state.pt", weights_only=True)
    assert state["phase"] == "decoder" and state["step"] == 10
    resumed = []
    train(_recipe(tiny_data, tmp_path / "b", 10, dec), log=resumed.append)
    assert any("resuming: phase decoder, step 10" in m for m in resumed)
    assert not any(m.startswith(("model step", "autoencoder step", "latents and conditions")) for m in resumed)
    # and the phase added to the finished run without it: no model step, no encoding, same decoder
    added = []
    train(_recipe(tiny_data, tmp_path / "plain", 10, dec), log=added.append)
    assert not any(m.startswith(("model step", "autoencoder step", "latents and conditions")) for m in added)
    a = torch.load(tmp_path / "a" / "train_state.pt", weights_only=True)
    for other in ("b", "plain"):
        b = torch.load(tmp_path / other / "train_state.pt", weights_only=True)
        assert a["step"] == b["step"] == 20
        for k in a["model"]:
            assert torch.equal(a["model"][k], b["model"][k]), (other, k)


def test_init_resized_moves_a_model_to_a_wider_latent(tiny_model, tmp_path):
    """`init_resized`: a checkpoint's weights into a model whose latent has twice the channels:
    every tensor of the same shape is the checkpoint's, the latent's in/out layers keep their
    initialisation; without the flag the mismatch is a one-line error naming the file."""
    from midas_cli.model.checkpoint import save_checkpoint
    from midas_cli.model.config import preset
    from midas_cli.model.midas import MidasModel
    from midas_cli.training.loop import load_model_weights

    ckpt = save_checkpoint(tiny_model, tmp_path / "ckpt")
    cfg = preset("tiny")
    arch = cfg.autoencoder.architecture
    arch["latent_channels"] = 2 * int(arch.get("latent_channels", 32))
    torch.manual_seed(1)
    wide = MidasModel(cfg)
    before = {k: v.clone() for k, v in wide.trainable_state_dict().items()}
    with pytest.raises(MidasError, match=r"model\.safetensors: weights do not match .*wrong shape"):
        load_model_weights(wide, str(ckpt))
    load_model_weights(wide, str(ckpt), allow_resized=True)
    old = tiny_model.trainable_state_dict()
    resized = [k for k, v in wide.trainable_state_dict().items() if v.shape != old[k].shape]
    assert resized and any(k.startswith("frame_in") for k in resized)
    for k, v in wide.trainable_state_dict().items():
        assert torch.equal(v, before[k] if k in resized else old[k]), k
