"""Head pose from landmarks: a real photo moved by known roll, shift and scale, and the synth
world's own conventions (signs, units, relative to the first frame)."""

from __future__ import annotations

import numpy as np
import pytest

from prepare_media import grace_hopper, need_face_models

# (roll degrees clockwise, dx px, dy px, scale factor) applied to the photo around its face
WARPS = [(0, 0, 0, 1.0), (8, 0, 0, 1.0), (-8, 0, 0, 1.0), (0, 20, 10, 1.0), (0, 0, 0, 1.1),
         (5, -15, 12, 0.9), (12, 10, -10, 1.05)]
# stated tolerances on the photo (in-plane motion is what a warp can show truthfully)
# x, y: a yaw misread from landmark jitter moves the head centre with it (±9° ≈ 0.04 of the crop)
ROLL_TOL, SHIFT_TOL, SCALE_TOL = 2.0, 0.05, 0.03
# out of plane: the truth is 0 (a flat photo does not turn); dlib's landmark jitter reads as yaw
OUT_OF_PLANE_TOL = 10.0


BACKENDS = ["dlib", "mediapipe"]


def warped_photo_pose(backend: str):
    import cv2
    from PIL import Image

    from midas_cli.prepare.faces import face_backend
    from midas_cli.prepare.headpose import clip_pose, mesh_clip_pose

    img = np.asarray(Image.open(grace_hopper()).convert("RGB"))
    H, W = img.shape[:2]
    fb = face_backend(backend)
    faces = []
    for roll, dx, dy, s in WARPS:
        M = cv2.getRotationMatrix2D((W / 2, H * 0.42), -roll, s)  # OpenCV's positive angle is counter-clockwise
        M[:, 2] += (dx, dy)
        frame = cv2.warpAffine(img, M, (W, H), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        faces.append(fb.refine(frame, fb.detect(frame)[0]))
    if backend == "mediapipe":
        est = mesh_clip_pose(np.stack([f.mesh for f in faces]), crop_side=W, sigma=0)
    else:
        est = clip_pose(np.stack([f.landmarks for f in faces]), crop_side=W, sigma=0)
    truth = np.array([[0, 0, r, dx / W, dy / W, s - 1] for r, dx, dy, s in WARPS])
    return est, truth


@pytest.mark.parametrize("backend", BACKENDS)
def test_pose_of_a_photo_moved_by_known_roll_shift_and_scale(backend):
    need_face_models(backend)
    est, truth = warped_photo_pose(backend)
    err = np.abs(est - truth)
    assert err[:, 2].max() < ROLL_TOL, err[:, 2]
    assert err[:, 3:5].max() < SHIFT_TOL, err[:, 3:5]
    assert err[:, 5].max() < SCALE_TOL, err[:, 5]
    assert err[:, :2].max() < OUT_OF_PLANE_TOL, err[:, :2]


def test_pose_follows_the_synth_worlds_conventions():
    """Landmarks made by the synth renderer's own rotation and projection come back as its pose."""
    from midas_cli.prepare.headpose import INDICES, MODEL_POINTS, clip_pose
    from midas_cli.synth.geometry import HEAD_SCALE, HEAD_Y, rotation

    size = 256
    truth = np.array([[0, 0, 0, 0, 0, 0], [20, 0, 0, 0, 0, 0], [0, 12, 0, 0, 0, 0], [0, 0, -10, 0, 0, 0],
                      [0, 0, 0, 0.05, -0.03, 0], [0, 0, 0, 0, 0, 0.1], [-15, -8, 6, -0.04, 0.02, -0.08]])
    k = HEAD_SCALE * size / np.ptp(MODEL_POINTS[:, 1])  # model units → pixels, head about as big as the synth's
    frames = []
    for yaw, pitch, roll, x, y, scale in truth:
        pts = np.zeros((68, 2))
        q = MODEL_POINTS @ rotation(yaw, pitch, roll).T  # the synth Projector: rotate, drop z, scale, place
        pts[INDICES] = np.array([size * (0.5 + x), size * (HEAD_Y + y)]) + k * (1 + scale) * q[:, :2]
        frames.append(pts)
    est = clip_pose(np.stack(frames), crop_side=size, sigma=0)
    np.testing.assert_allclose(est[:, :3], truth[:, :3], atol=0.05)
    np.testing.assert_allclose(est[:, 3:], truth[:, 3:], atol=1e-3)


def test_smoothing_keeps_the_first_frame_at_pose_zero_and_removes_jitter():
    from midas_cli.prepare.headpose import INDICES, MODEL_POINTS, clip_pose

    rng = np.random.default_rng(0)
    pts = np.zeros((40, 68, 2))
    pts[:, INDICES] = 0.2 * MODEL_POINTS[:, :2] + 128 + rng.normal(0, 0.6, (40, len(INDICES), 2))
    raw, smooth = clip_pose(pts, 256, sigma=0), clip_pose(pts, 256)
    assert np.all(smooth[0] == 0) and np.all(raw[0] == 0)
    assert np.diff(smooth[:, 2]).std() < 0.5 * np.diff(raw[:, 2]).std()


# A synth clip through `prepare`, median |error| per frame (degrees). Seed 4's third clip is held
# out from the choice of the dlib fit's weights and priors (seeds 0-2): it turns ±15° in yaw and
# the per-frame fit with the generic face read its yaw at twice the truth (median error 28°); the
# clip fit reads it within 8°. dlib's pitch stays loose: dlib lifts its nose and brow points when
# a drawn mouth opens or the brows rise, which no rigid fit can tell from a nod. The mediapipe
# mesh has depths and points that do not move with the mouth (docs/prepare.md): there pitch must
# also follow the truth, not only stay small.
SYNTH_TOL = {"dlib": (14.0, 5.0), "mediapipe": (3.0, 4.0)}  # yaw, pitch
SYNTH_PITCH_CORR = 0.6  # mediapipe only (dlib's ≈ 0)


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_synth_clip_through_prepare_is_kept_and_comes_out_with_its_pose(tmp_path, backend):
    """The synth world's known pose comes back from `prepare`: yaw and pitch within the stated
    tolerances, roll, x, y and scale loosely (x, y are fractions of the crop, not of the frame)."""
    need_face_models(backend)
    import json

    from prepare_media import ffmpeg

    from midas_cli.media.pose import load_pose
    from midas_cli.prepare.headpose import angles
    from midas_cli.prepare.run import PrepareOptions, prepare
    from midas_cli.synth.geometry import rotation
    from midas_cli.synth.pose import nod_offsets
    from midas_cli.training.data import load_clips

    from midas_cli.synth.dataset import write_dataset

    synth, clip = tmp_path / "synth", 2
    write_dataset(synth, clips=clip + 1, seconds=4.0, seed=4, size=256, progress=False)
    e = json.loads((synth / "manifest.jsonl").read_text().splitlines()[clip])
    (tmp_path / "in").mkdir()
    ffmpeg("-i", str(synth / e["video"]), "-i", str(synth / e["audio"]), "-c:v", "copy", "-c:a", "aac",
           str(tmp_path / "in" / "synth.mp4"))
    out = tmp_path / "out"
    report = prepare([tmp_path / "in"], out, PrepareOptions(clip_seconds=4.0, min_seconds=1.0, face_backend=backend))
    assert report["clips"] == 1, report["rejections"]
    got = json.loads((out / "manifest.jsonl").read_text().splitlines()[0])
    n, start = round(got["seconds"] * 12.5), round(got["start"] * 12.5)
    truth_json = json.loads((synth / e["truth"]).read_text())
    drawn = np.array(truth_json["pose"])
    drawn[:, 1] += nod_offsets(np.array(truth_json["listening"]))  # the video shows the listening nod
    drawn = drawn[start:start + n]
    truth = np.zeros_like(drawn)  # relative to the clip's first frame, as prepare writes it
    R0 = rotation(*drawn[0, :3])
    for t in range(n):
        truth[t, :3] = angles(rotation(*drawn[t, :3]) @ R0.T)
    truth[:, 3:] = drawn[:, 3:] - drawn[0, 3:]
    est = load_pose(out / got["pose"], n)
    err = np.median(np.abs(est - truth), 0)
    yaw_tol, pitch_tol = SYNTH_TOL[backend]
    assert err[0] < yaw_tol and err[1] < pitch_tol, err
    assert err[2] < 10 and err[3:].max() < 0.1, err  # roll, x, y, scale loosely
    if backend == "mediapipe":
        assert np.corrcoef(est[:, 1], truth[:, 1])[0, 1] > SYNTH_PITCH_CORR
    assert len(load_clips(out, 128, 128)) == 1
