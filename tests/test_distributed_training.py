"""`midas train` under `torchrun --nproc_per_node 2` on CPU (gloo): DDP and FSDP against one process.

One tiny recipe, three ways: one process with a global batch of 4; two ranks with 2 each, data-
parallel (`train.parallel=ddp`) and sharded (`fsdp`). DDP and FSDP compute the same sums in a
different layout, so their loss curves agree to float rounding; against one process the ranks
draw other windows and other noise (each rank its own shards and RNG stream), so that curve
agrees within a stated tolerance. An FSDP run killed mid-way resumes to the same weights as one
never stopped, and its checkpoint loads in one process and renders.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

STEPS = 40


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    from midas_cli.synth.dataset import write_dataset

    out = tmp_path_factory.mktemp("data")
    write_dataset(out, clips=4, seconds=3.0, seed=0, size=64, progress=False)
    return out


def _args(data: Path, output: Path, batch: int, extra=()) -> list[str]:
    return ["demo_base", f"data.dir={data}", "model=tiny", f"output={output}", "autoencoder.steps=0",
            "data.shard_mb=0.01", "data.workers=0", f"train.batch_size={batch}", f"train.steps={STEPS}",
            "train.warmup=5", "train.lr=0.003", "train.log_every=1", "checkpoint_every=10", "eval=null",
            "threads=1", *extra]


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _torchrun(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
            "-m", "midas_cli", "train", *args]


def _losses(lines) -> np.ndarray:
    return np.array([float(m.split("loss ")[1].split()[0]) for m in lines if m.startswith("model step")])


def _run(args: list[str]) -> list[str]:
    proc = subprocess.run(_torchrun(args), capture_output=True, text=True, env=_env(), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stderr.splitlines()


@pytest.fixture(scope="module")
def runs(tiny_data, tmp_path_factory):
    from midas_cli.training.loop import train
    from midas_cli.training.recipe import load_recipe

    root = tmp_path_factory.mktemp("runs")
    one = []
    train(load_recipe(_args(tiny_data, root / "one", 4)[0], _args(tiny_data, root / "one", 4)[1:]), log=one.append)
    ddp = _run(_args(tiny_data, root / "ddp", 2, ["train.parallel=ddp"]))
    fsdp = _run(_args(tiny_data, root / "fsdp", 2, ["train.parallel=fsdp"]))
    return root, {"one": _losses(one), "ddp": _losses(ddp), "fsdp": _losses(fsdp)}


def test_ddp_and_fsdp_give_the_same_loss_curve(runs):
    _, loss = runs
    assert len(loss["ddp"]) == len(loss["fsdp"]) == STEPS
    # the logged loss is rank 0's (smoothed); the same math in another layout: float rounding only
    np.testing.assert_allclose(loss["fsdp"], loss["ddp"], rtol=2e-3)


def test_two_ranks_follow_one_process_with_the_same_global_batch(runs):
    _, loss = runs
    assert len(loss["one"]) == STEPS
    # other windows and noise draws: compare where the curve has come down, over 10 steps
    one, two = loss["one"][-10:].mean(), loss["ddp"][-10:].mean()
    assert abs(one - two) < 0.15 * one, (one, two)
    for curve in (loss["one"], loss["ddp"]):
        assert curve[-10:].mean() < 0.8 * curve[:3].mean(), curve


def test_fsdp_checkpoint_loads_in_one_process_and_renders(runs):
    from midas_cli.evaluation.cases import make_eval_cases
    from midas_cli.model.checkpoint import load_model
    from midas_cli.pipeline import model_generator

    root, _ = runs
    model = load_model(root / "fsdp" / "checkpoint")
    state = torch.load(root / "fsdp" / "train_state.pt", weights_only=True)
    assert state["step"] == STEPS
    for name, tensor in model.state_dict().items():
        if name in state["model"]:
            assert torch.equal(tensor, state["model"][name].to(tensor.dtype)), name
    case = make_eval_cases(1, 1.0, 0, model.cfg.autoencoder.width)[0]
    frames = model_generator(model)(case).astype(np.float32)
    assert frames.shape[0] == case.n_frames and np.isfinite(frames).all() and frames.std() > 0


def test_killed_fsdp_run_resumes_to_the_same_weights(runs, tiny_data):
    root, _ = runs
    out = root / "fsdp_killed"
    args = _args(tiny_data, out, 2, ["train.parallel=fsdp"])
    proc = subprocess.Popen(_torchrun(args), stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                            env=_env())
    for line in proc.stderr:
        if line.startswith("model step 15/"):
            # as a cluster preempts a job: torchrun takes its workers down with it
            proc.send_signal(signal.SIGTERM)
            break
    proc.communicate(timeout=60)
    state = torch.load(out / "train_state.pt", weights_only=True)
    assert state["phase"] == "model" and 10 <= state["step"] < STEPS
    lines = _run(args)
    assert any(f"resuming: phase model, step {state['step']}" in m for m in lines), lines[:40]
    a = torch.load(root / "fsdp" / "train_state.pt", weights_only=True)
    b = torch.load(out / "train_state.pt", weights_only=True)
    assert a["step"] == b["step"] == STEPS
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
