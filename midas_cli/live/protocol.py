"""The live WebSocket wire format (docs/live.md), shared by the server and the clients.

Client → server
- text: one JSON object per message, `type` one of `CLIENT_TYPES`:
  hello {sample_rate: 16000, frame_samples: 320, prompt?, pose?, ref?: base64 image, token?},
  prompt {text}, pose {yaw, pitch, roll, x, y, scale}, interrupt {}, stop {}.
- binary: one audio frame = 1 tag byte (`TAG_SPEAK` or `TAG_LISTEN`) + exactly
  `frame_samples` PCM16 little-endian mono samples at 16 kHz. Send a time slot's listen frame
  before its speak frame.

Server → client
- text JSON: ready, prompt (ack), interrupted, error {message}, bye {stats}.
- binary: one message per 480 ms chunk, so frames and their audio cannot drift apart:
  4-byte big-endian header length, the JSON header, the JPEG frames back to back
  (header.jpeg_bytes their sizes), then header.audio_samples PCM16 LE samples.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import struct

import numpy as np

from midas_cli.errors import MidasError

SAMPLE_RATE = 16000
TAG_SPEAK, TAG_LISTEN = 0x01, 0x02
TAGS = {TAG_SPEAK: "speak", TAG_LISTEN: "listen"}
CLIENT_TYPES = ("hello", "prompt", "pose", "interrupt", "stop")
DEFAULT_FRAME_SAMPLES = 320  # 20 ms
MIN_FRAME_SAMPLES, MAX_FRAME_SAMPLES = 80, 8000  # 5 ms .. 500 ms
MAX_MESSAGE_BYTES = 8 * 2**20  # a hello with a large photo in base64; anything bigger is refused
MAX_PROMPT_CHARS = 1000

# WebSocket close codes (RFC 6455 §7.4.1) the server uses
CLOSE_NORMAL, CLOSE_GOING_AWAY, CLOSE_UNSUPPORTED, CLOSE_INVALID = 1000, 1001, 1003, 1007
CLOSE_POLICY, CLOSE_TOO_BIG, CLOSE_INTERNAL, CLOSE_TRY_LATER = 1008, 1009, 1011, 1013


class ProtocolError(MidasError):
    """A client broke the protocol; the message names the problem, `close_code` how to close."""

    def __init__(self, message: str, close_code: int = CLOSE_POLICY):
        super().__init__(message)
        self.close_code = close_code


def parse_control(text: str) -> dict:
    """A client's JSON control message → dict with a known `type`, or a ProtocolError."""
    if len(text) > MAX_MESSAGE_BYTES:
        raise ProtocolError(f"message too big ({len(text)} bytes; the limit is {MAX_MESSAGE_BYTES})", CLOSE_TOO_BIG)
    try:
        msg = json.loads(text)
    except ValueError as e:
        raise ProtocolError(f"malformed JSON ({e})", CLOSE_INVALID) from None
    if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
        raise ProtocolError("a control message must be a JSON object with a string `type`", CLOSE_INVALID)
    if msg["type"] not in CLIENT_TYPES:
        raise ProtocolError(f"unknown message type {msg['type'][:40]!r} (expected {', '.join(CLIENT_TYPES)})",
                            CLOSE_UNSUPPORTED)
    return msg


def check_hello(msg: dict) -> int:
    """Validate a hello's audio format; returns its frame size in samples."""
    rate = msg.get("sample_rate", SAMPLE_RATE)
    if rate != SAMPLE_RATE:
        raise ProtocolError(f"sample_rate {rate!r}: the server takes {SAMPLE_RATE} Hz PCM16 mono", CLOSE_UNSUPPORTED)
    n = msg.get("frame_samples", DEFAULT_FRAME_SAMPLES)
    if not isinstance(n, int) or isinstance(n, bool) or not MIN_FRAME_SAMPLES <= n <= MAX_FRAME_SAMPLES:
        raise ProtocolError(f"frame_samples {n!r}: expected an integer from {MIN_FRAME_SAMPLES} to "
                            f"{MAX_FRAME_SAMPLES}", CLOSE_UNSUPPORTED)
    return n


def prompt_text(msg: dict) -> str:
    text = msg.get("text", "")
    if not isinstance(text, str) or len(text) > MAX_PROMPT_CHARS:
        raise ProtocolError(f"prompt: `text` must be a string of at most {MAX_PROMPT_CHARS} characters")
    return text.strip()


def decode_ref(b64: object, width: int, height: int) -> np.ndarray:
    """A hello's base64 reference photo → uint8 (height, width, 3), the face framed as `generate`
    frames it; bombs and non-images refused."""
    from midas_cli.media.framing import frame_reference
    from midas_cli.media.image import open_rgb_bytes

    if not isinstance(b64, str):
        raise ProtocolError("ref: expected a base64 string holding a png, jpg or webp image")
    try:
        data = base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolError("ref: not valid base64", CLOSE_INVALID) from None
    try:
        return frame_reference(np.asarray(open_rgb_bytes(data, "ref"), dtype=np.uint8), width, height)
    except MidasError as e:
        raise ProtocolError(str(e), CLOSE_INVALID) from None


# ---- audio -------------------------------------------------------------------------------------


def audio_frame(tag: int, pcm: np.ndarray) -> bytes:
    """float32 samples → one client audio frame (tag byte + PCM16 LE)."""
    return bytes([tag]) + float_to_pcm16(pcm)


def parse_audio(data: bytes, frame_samples: int) -> tuple[str, np.ndarray]:
    """One client audio frame → ("speak" | "listen", float32 samples), or a ProtocolError."""
    if len(data) > MAX_MESSAGE_BYTES:
        raise ProtocolError(f"message too big ({len(data)} bytes; the limit is {MAX_MESSAGE_BYTES})", CLOSE_TOO_BIG)
    if not data or data[0] not in TAGS:
        tag = f"0x{data[0]:02x}" if data else "none"
        raise ProtocolError(f"audio frame: unknown tag {tag} (0x01 speak, 0x02 listen)", CLOSE_INVALID)
    expected = 1 + 2 * frame_samples
    if len(data) != expected:
        raise ProtocolError(f"audio frame of wrong size: {len(data)} bytes, expected {expected} "
                            f"(1 tag byte + {frame_samples} PCM16 samples)", CLOSE_INVALID)
    return TAGS[data[0]], pcm16_to_float(data[1:])


def float_to_pcm16(pcm: np.ndarray) -> bytes:
    # ×32768 then clip, the exact inverse of pcm16_to_float: audio comes back bit for bit
    scaled = (np.clip(np.asarray(pcm, np.float32), -1.0, 1.0) * 32768.0).round()
    return np.clip(scaled, -32768, 32767).astype("<i2").tobytes()


def pcm16_to_float(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0


# ---- chunks ------------------------------------------------------------------------------------


def encode_jpeg(frame: np.ndarray, quality: int = 85) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def encode_chunk(header: dict, frames: np.ndarray, audio: np.ndarray, quality: int = 85) -> bytes:
    """One server→client chunk message: header + JPEG frames + PCM16 audio."""
    return pack_chunk(header, [encode_jpeg(f, quality) for f in frames], float_to_pcm16(audio))


def pack_chunk(header: dict, jpegs: list[bytes], pcm16: bytes) -> bytes:
    """`encode_chunk` from frames already JPEG-encoded and audio already PCM16."""
    head = json.dumps({**header, "type": "chunk", "frames": len(jpegs), "jpeg_bytes": [len(j) for j in jpegs],
                       "audio_samples": len(pcm16) // 2, "sample_rate": SAMPLE_RATE}).encode()
    return struct.pack(">I", len(head)) + head + b"".join(jpegs) + pcm16


def decode_chunk(data: bytes) -> tuple[dict, list[bytes], np.ndarray]:
    """A chunk message → (header, JPEG bytes per frame, float32 audio)."""
    (n,) = struct.unpack(">I", data[:4])
    header = json.loads(data[4:4 + n])
    pos, jpegs = 4 + n, []
    for size in header["jpeg_bytes"]:
        jpegs.append(data[pos:pos + size])
        pos += size
    audio = pcm16_to_float(data[pos:pos + 2 * header["audio_samples"]])
    return header, jpegs, audio
