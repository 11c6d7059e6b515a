"""Live: audio in as it is spoken, talking video out chunk by chunk.

- `session`: the library API (`LiveSession`, `live_chunks`), no network.
- `protocol`: the WebSocket wire format (docs/live.md).
- `worker`: the one thread that runs the model for every session.
- `server`: `midas serve` (FastAPI app + the browser page in `static/`).
- `client`: `midas stream`, the scripted client.
"""

from midas_cli.live.session import LiveChunk, LiveSession, live_chunks  # noqa: F401
