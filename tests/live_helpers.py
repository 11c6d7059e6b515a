"""Shared pieces of the live tests: a tiny model whose output depends on its conditions."""

import numpy as np
import torch


def responsive(model):
    """Give the zero-initialised (adaLN-Zero) weights random values, so that, unlike a fresh
    tiny model whose head predicts zero velocity, the frames depend on audio, prompt and pose."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            if p.numel() and not p.any():
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return model


def speech(seconds, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    return (0.3 * np.sin(2 * np.pi * 180 * t) * (rng.random(len(t)) > 0.3)).astype(np.float32)


PROMPTS = ["a calm face", "calm", "she smiles warmly"]


def live_tiny_model():
    """The tiny preset with a tokenizer that knows the test prompts (unknown words all map to
    [UNK], so two unknown prompts would look the same), made `responsive`."""
    from midas_cli.conditions.text import build_word_tokenizer
    from midas_cli.model.config import preset
    from midas_cli.model.midas import MidasModel

    torch.manual_seed(0)
    return responsive(MidasModel(preset("tiny"), tokenizer=build_word_tokenizer(PROMPTS, 128)).eval())


class ServerThread:
    """`create_app` under a real uvicorn on a free localhost port, in a thread (tests only)."""

    def __init__(self, model, **config):
        import socket
        import threading

        import uvicorn

        from midas_cli.live import protocol as P
        from midas_cli.live.server import ServerConfig, create_app

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        app = create_app(model, config=ServerConfig(**config))
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                                    ws_max_size=P.MAX_MESSAGE_BYTES + 1024, lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        import time

        self.thread.start()
        for _ in range(200):
            if self.server.started:
                return self
            time.sleep(0.05)
        raise RuntimeError("uvicorn did not start")

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(timeout=10)
