"""Shared fixtures: every test runs offline with a private Hugging Face home."""

import os

# set before anything imports huggingface_hub, which reads it at import time
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(autouse=True)
def offline_hub(tmp_path_factory, monkeypatch):
    home = tmp_path_factory.mktemp("hf_home")
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(c, "HF_HUB_CACHE", str(home / "hub"))
    yield


def _tiny_model(frame_conditions: bool = False, reference_in_slots: bool = False, text_in_slots: bool = False):
    from midas_cli.model.config import preset
    from midas_cli.model.midas import MidasModel

    cfg = preset("tiny")
    cfg.frame_conditions = frame_conditions
    cfg.reference_in_slots = reference_in_slots
    cfg.text_in_slots = text_in_slots
    torch.manual_seed(0)
    model = MidasModel(cfg).eval()
    if model.ref_in is not None:  # zero-initialised: give it weights, or the tests could not see it
        torch.nn.init.normal_(model.ref_in.weight, std=0.1)
    if model.projector.text_frame is not None:  # the same for the text path
        torch.nn.init.normal_(model.projector.text_frame.weight, std=0.1)
    return model


@pytest.fixture
def tiny_model():
    return _tiny_model()


@pytest.fixture(params=[False, True], ids=["chunk-conditions", "frame-conditions+reference+text-in-slots"])
def tiny_model_both(request):
    """The tiny model without and with the per-frame paths (`frame_conditions`,
    `reference_in_slots`, `text_in_slots`)."""
    return _tiny_model(request.param, request.param, request.param)


@pytest.fixture(scope="module")
def tiny_source(tmp_path_factory):
    """A synthetic dataset small enough to encode and roll out in seconds: 3 clips of 3 s at 64 px."""
    from midas_cli.synth.dataset import write_dataset

    out = tmp_path_factory.mktemp("source")
    write_dataset(out, clips=3, seconds=3.0, seed=0, size=64, progress=False)
    return out


@pytest.fixture(scope="module")
def frozen_tiny_model():
    """The tiny preset in eval mode without gradients, as the data tools (encoding, rollouts) use it."""
    from midas_cli.model.config import preset
    from midas_cli.model.midas import MidasModel

    torch.manual_seed(0)
    return MidasModel(preset("tiny")).eval().requires_grad_(False)
