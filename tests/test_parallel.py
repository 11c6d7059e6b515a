"""Data-parallel training (training/parallel.py) on CPU with gloo: FSDP2 and DDP under torchrun
compute what one process computes, their state is saved in one format, and it resumes exactly.

The runs share one fixture: FSDP (2 ranks, activation checkpointing), DDP (2 ranks, 2
accumulated micro-batches each), both saved at step 3 and resumed from it, and one process
on the whole batch, 6 steps each (tests/parallel_worker.py). Every random draw is part of the data,
so the three do the same arithmetic; only float summation order differs (gradient all-reduce
vs one batch), hence the tolerance: measured differences are ~1e-7 relative, the bound is 1e-5.
AdamW hides a gradient's scale from the loss (ranks clipping by their own shard's norm moved
the loss by only ~3e-6 in 4 steps, measured; a summed gradient would hide the same way), so
the pre-clip gradient norm and the post-clip global norm (summed by hand over the shards,
which must equal the threshold: clipping always acts here) are compared too.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import parallel_worker as worker

STEPS, SAVE_AT = 6, 3
RTOL = 1e-5


def _torchrun(out: Path, *args: str) -> list[dict]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(Path(worker.__file__)), "--steps", str(STEPS), "--out", str(out), *args]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads((out / f"result-{r}.json").read_text()) for r in range(2)]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("parallel")
    fsdp = _torchrun(base / "fsdp", "--mode", "fsdp", "--save-at", str(SAVE_AT), "--activation-checkpointing")
    ddp = _torchrun(base / "ddp", "--mode", "ddp", "--accum", "2", "--save-at", str(SAVE_AT))
    (base / "one").mkdir()
    one = worker.train("ddp", STEPS, base / "one", save_at=STEPS)  # one process: no wrapper at all
    return {"fsdp": fsdp, "ddp": ddp, "one": one, "dir": base}


def test_fsdp_ddp_and_one_process_give_the_same_loss_curve(runs):
    one = runs["one"]["losses"]
    for mode in ("fsdp", "ddp"):
        for rank in runs[mode]:
            assert rank["world"] == 2
            torch.testing.assert_close(rank["losses"], one, rtol=RTOL, atol=0)
            torch.testing.assert_close(rank["grad_norms"], runs["one"]["grad_norms"], rtol=RTOL, atol=0)
    assert one[-1] != one[0]  # the curves move: the comparison is not of constants


def test_gradient_clipping_uses_the_global_norm_of_sharded_gradients(runs):
    for mode in ("fsdp", "ddp"):
        for rank in runs[mode]:
            assert min(rank["grad_norms"]) > worker.CLIP  # clipping acts at every step
            torch.testing.assert_close(rank["clipped_norms"], [worker.CLIP] * STEPS, rtol=1e-5, atol=0)


def test_parameters_are_the_same_on_every_rank_after_training(runs):
    for mode in ("fsdp", "ddp"):
        assert runs[mode][0]["digest"] == runs[mode][1]["digest"], mode


def test_saved_full_state_is_the_same_format_for_fsdp_and_one_process(runs):
    fsdp = torch.load(runs["dir"] / "fsdp" / f"state-{STEPS}.pt", weights_only=True)
    one = torch.load(runs["dir"] / "one" / f"state-{STEPS}.pt", weights_only=True)
    assert fsdp["model"].keys() == one["model"].keys() == worker.make_model().state_dict().keys()
    assert fsdp["optimizer"]["param_groups"] == one["optimizer"]["param_groups"]
    assert fsdp["optimizer"]["state"].keys() == one["optimizer"]["state"].keys()
    for k, v in fsdp["model"].items():
        assert type(v) is torch.Tensor and v.device.type == "cpu", k  # whole tensors, not DTensor shards
        torch.testing.assert_close(v, one["model"][k], rtol=1e-4, atol=1e-6)
    for k, s in fsdp["optimizer"]["state"].items():
        torch.testing.assert_close(s["exp_avg_sq"], one["optimizer"]["state"][k]["exp_avg_sq"], rtol=1e-3, atol=1e-10)


def test_a_run_resumed_from_its_saved_state_continues_exactly(runs):
    for rank in runs["fsdp"] + runs["ddp"]:
        # same process layout, same arithmetic: bit-identical, not just close
        assert rank["resumed_losses"] == rank["losses"][SAVE_AT:]
        assert rank["resumed_digest"] == rank["digest"]


def test_checkpoint_written_by_an_fsdp_run_loads_and_renders(runs, tmp_path):
    from midas_cli.engine.streaming import StreamingEngine
    from midas_cli.model.checkpoint import load_model, save_checkpoint
    from midas_cli.model.midas import ChunkFeatures

    state = torch.load(runs["dir"] / "fsdp" / f"state-{STEPS}.pt", weights_only=True)
    plain = worker.make_model(seed=7)
    plain.load_state_dict(state["model"])  # strict: the gathered state is a plain model's state
    resaved = load_model(save_checkpoint(plain.eval(), tmp_path / "ckpt"))
    written = load_model(runs["dir"] / "fsdp" / "checkpoint")  # saved by rank 0 from the sharded model
    for (k, a), b in zip(written.state_dict().items(), resaved.state_dict().values()):
        assert torch.equal(a, b), k
    ref, _, _, feats, _, _ = worker.global_batch(written, 0)
    text = torch.zeros(1, 1, written.projector.text[0].in_features)
    engine = StreamingEngine(written, seed=0)
    engine.start(ref[:1])
    latents = engine.generate_chunk(ChunkFeatures(feats.audio[:1, :1], feats.pose[:1, :1], text, feats.listen[:1, :1]))
    with torch.no_grad():
        frames = written.autoencoder.decode(latents[0, :2], written.cfg.latent_grid)
    assert frames.shape == (2, 3, 64, 64) and torch.isfinite(frames).all()


def test_activation_checkpointing_leaves_training_grads_and_cached_inference_unchanged():
    from midas_cli.engine.streaming import StreamingEngine
    from midas_cli.model.midas import ChunkFeatures
    from midas_cli.training.parallel import enable_activation_checkpointing

    def run(model):
        model.train()
        loss = worker.SeededLoss(model)(*worker.global_batch(model, 0))
        loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        ref, _, _, feats, _, _ = worker.global_batch(model, 1)
        text = torch.zeros(1, 1, model.projector.text[0].in_features)
        engine = StreamingEngine(model.eval(), seed=0)
        engine.start(ref[:1])
        frames = engine.generate_chunk(ChunkFeatures(feats.audio[:1, :1], feats.pose[:1, :1], text, feats.listen[:1, :1]))
        return grads, frames

    grads, frames = run(worker.make_model())
    model = worker.make_model()
    enable_activation_checkpointing(model)
    calls = []
    for layer in model.backbone.qwen.layers:  # count recomputed layers: checkpointing really acts
        inner = layer._gradient_checkpointing_func
        layer._gradient_checkpointing_func = lambda *a, inner=inner, **k: calls.append(1) or inner(*a, **k)
    grads_ckpt, frames_ckpt = run(model)
    assert len(calls) == len(model.backbone.qwen.layers)  # once each in training, never in inference
    assert grads.keys() == grads_ckpt.keys() and any(k.startswith("backbone.") for k in grads)
    for k in grads:
        torch.testing.assert_close(grads[k], grads_ckpt[k], rtol=1e-5, atol=1e-7, msg=k)
    assert torch.equal(frames, frames_ckpt)


def test_memory_estimate_shards_state_over_ranks_and_ddp_does_not():
    from midas_cli.model.config import preset
    from midas_cli.training.parallel import GB, memory_estimate, parameter_counts

    cfg = preset("tiny")
    counts = parameter_counts(cfg)
    fsdp1, fsdp4 = (memory_estimate(cfg, w, counts=counts) for w in (1, 4))
    ddp1, ddp4 = (memory_estimate(cfg, w, parallel="ddp", counts=counts) for w in (1, 4))
    assert fsdp4["state_gb"] == pytest.approx(fsdp1["state_gb"] / 4) == pytest.approx(4 * counts["trainable"] / GB)
    assert ddp4["state_gb"] == ddp1["state_gb"] == pytest.approx(22 * counts["trainable"] / GB)
    assert fsdp4["activations_gb"] == fsdp1["activations_gb"] > 0
    no_ckpt = memory_estimate(cfg, 4, counts=counts, activation_checkpointing=False)
    assert no_ckpt["activations_gb"] > fsdp4["activations_gb"]


def test_an_unknown_parallel_mode_is_a_one_line_error(tiny_model):
    from midas_cli.errors import MidasError
    from midas_cli.training.parallel import wrap_for_training

    with pytest.raises(MidasError, match="parallel: must be one of ddp, fsdp"):
        wrap_for_training(worker.SeededLoss(tiny_model), tiny_model, parallel="zero3", device=torch.device("cpu"), world=2)
