"""Media in and out, one small module each.

- `audio`: any audio file → 16 kHz mono float32; 16-bit WAV out.
- `image`: the reference photo → RGB uint8 at the model's size (centre crop, no distortion).
- `pose`, `prompts`: the JSON timelines of docs/formats.md, validated against `schemas/`.
- `video_out`: frames → H.264 mp4 (+ AAC) through ffmpeg, or a folder of PNGs; never half-written.
- `video_in`: frames from a video, an image or a folder of images; `probe_video`.
- `files`, `jsonfile`: shared checks and one-line errors.
"""
