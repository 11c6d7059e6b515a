"""The library's live API (`midas_cli.live.session`): same frames as a file render, causal,
prompt and pose take effect from the next chunk, bounded queue drops whole chunks."""

import numpy as np
import pytest

from midas_cli.errors import MidasError
from midas_cli.live.session import LiveSession, live_chunks
from midas_cli.pipeline import RenderInputs, render

from live_helpers import live_tiny_model
from live_helpers import speech as _speech

S = 7680  # samples per 480 ms chunk


@pytest.fixture(scope="module")
def tiny_model():
    return live_tiny_model()


def _ref(model, seed=0):
    cfg = model.cfg.autoencoder
    return np.random.default_rng(seed).integers(0, 255, (cfg.height, cfg.width, 3), dtype=np.uint8)


def _pieces(audio, n=320):
    return [audio[i:i + n] for i in range(0, len(audio), n)]


def test_live_frames_equal_a_file_render_of_the_same_inputs(tiny_model):
    audio, listen, ref = _speech(3 * 0.48), _speech(3 * 0.48, seed=1) * 0.5, _ref(tiny_model)
    expected = []
    render(tiny_model, RenderInputs(ref=ref, audio=audio, n_frames=18, listen_audio=listen,
                                    prompts=[(0.0, "calm")]), expected.append, pipeline=False)
    events = [("prompt", "calm")]
    for a, b in zip(_pieces(audio), _pieces(listen)):  # interleaved 20 ms frames, as a client sends them
        events += [("listen", b), ("speak", a)]
    chunks = list(live_chunks(tiny_model, ref, events))
    assert [c.index for c in chunks] == [0, 1, 2]
    got = np.concatenate([c.frames for c in chunks])
    np.testing.assert_array_equal(got, np.stack(expected))
    for c in chunks:  # each chunk carries exactly its own audio
        assert c.frames.shape[0] == 6 and c.audio.shape == (S,)
        np.testing.assert_array_equal(c.audio, audio[c.index * S:(c.index + 1) * S])


def test_a_chunk_closes_only_when_its_last_sample_arrives_and_later_audio_cannot_change_it(tiny_model):
    ref, audio = _ref(tiny_model), _speech(0.96)
    a = LiveSession(tiny_model, ref)
    a.start()
    assert a.push_speak(audio[:S - 1]) == 0 and a.next_chunk() is None
    assert a.push_speak(audio[S - 1:S]) == 1
    first = a.next_chunk()
    b = LiveSession(tiny_model, ref)
    b.start()
    b.push_speak(audio[:S])
    b.push_speak(np.ones(S, np.float32))  # different future audio, pushed before chunk 0 is generated
    np.testing.assert_array_equal(b.next_chunk().frames, first.frames)
    assert first.speak_end == S


def test_prompt_change_takes_effect_at_the_next_chunk(tiny_model):
    ref, audio = _ref(tiny_model), _speech(3 * 0.48)

    def run(second_prompt):
        s = LiveSession(tiny_model, ref, prompt="calm")
        s.start()
        out = []
        for c in range(3):
            if c == 2:
                s.set_prompt(second_prompt)
            s.push_speak(audio[c * S:(c + 1) * S])
            out.append(s.next_chunk())
        return out

    same, changed = run("calm"), run("she smiles warmly")
    assert [c.prompt for c in changed] == ["calm", "calm", "she smiles warmly"]
    for c in (0, 1):
        np.testing.assert_array_equal(same[c].frames, changed[c].frames)
    assert not np.array_equal(same[2].frames, changed[2].frames)


def test_pose_update_changes_the_next_chunk_and_bad_pose_is_refused(tiny_model):
    ref, audio = _ref(tiny_model), _speech(0.96)

    def run(pose):
        s = LiveSession(tiny_model, ref)
        s.start()
        s.push_speak(audio[:S])
        first = s.next_chunk()
        s.set_pose(pose)
        s.push_speak(audio[S:])
        return first, s.next_chunk()

    a0, a1 = run({"yaw": 0.0})
    b0, b1 = run({"yaw": 25.0, "pitch": -5})
    np.testing.assert_array_equal(a0.frames, b0.frames)
    assert not np.array_equal(a1.frames, b1.frames)
    s = LiveSession(tiny_model, ref)
    with pytest.raises(MidasError, match="unknown field 'tilt'"):
        s.set_pose({"tilt": 3})
    with pytest.raises(MidasError, match="6 finite numbers"):
        s.set_pose([1, 2])


def test_full_queue_drops_the_oldest_whole_chunk_and_counts_it(tiny_model):
    s = LiveSession(tiny_model, _ref(tiny_model), max_pending=2)
    s.start()
    audio = _speech(5 * 0.48)
    s.push_speak(audio)  # 5 chunks close at once; only the newest 2 may wait
    assert s.dropped == 3 and s.pending == 2
    got = [s.next_chunk(), s.next_chunk(), s.next_chunk()]
    assert [c.index for c in got[:2]] == [3, 4] and got[2] is None
    for c in got[:2]:
        np.testing.assert_array_equal(c.audio, audio[c.index * S:(c.index + 1) * S])


def test_interrupt_flushes_waiting_and_half_filled_chunks(tiny_model):
    s = LiveSession(tiny_model, _ref(tiny_model))
    s.start()
    s.push_speak(_speech(2.5 * 0.48))  # 2 closed, half of a third
    assert s.interrupt() == 2 and s.pending == 0 and s.next_chunk() is None
    silence = np.zeros(S, np.float32)
    assert s.push_speak(silence) == 1  # a whole new chunk: the half-filled one was dropped
    chunk = s.next_chunk()
    assert chunk.index == 2 and not chunk.audio.any()
