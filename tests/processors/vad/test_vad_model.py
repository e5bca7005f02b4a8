import numpy as np
import pytest

from voxpipe.processors.vad import SileroVADModel, SileroVADStream, window_samples


def _windows(pcm: bytes, rate: int) -> list[bytes]:
    size = 2 * window_samples(rate)
    return [pcm[i : i + size] for i in range(0, len(pcm) - size + 1, size)]


def test_shared_model_loads_once():
    model = SileroVADModel.shared()
    assert SileroVADModel.shared() is model
    assert model.path.name == "silero_vad.onnx"
    assert (model.path.parent / "LICENSE.silero-vad").read_text().startswith("MIT License")


def test_geometry():
    assert window_samples(8000) == 256
    assert window_samples(16000) == 512
    s = SileroVADStream(8000)
    assert (s.window, s.context) == (256, 32)
    s = SileroVADStream(16000)
    assert (s.window, s.context) == (512, 64)
    with pytest.raises(ValueError, match="8000 or 16000"):
        SileroVADStream(44100)


def test_speech_and_silence(speech):
    s = SileroVADStream(speech.sample_rate)
    probs = np.array([s.probability(w) for w in _windows(speech.pcm, speech.sample_rate)])
    t = (np.arange(probs.size) + 0.5) * window_samples(speech.sample_rate) / speech.sample_rate
    (a0, a1), (b0, _) = speech.segments[0], speech.segments[1]
    inside = (t > a0 + 0.2) & (t < a1 - 0.2)
    gap = (t > a1 + 0.3) & (t < b0 - 0.1)
    # Mostly speech; the comma pause in the first sentence is rightly not.
    assert np.mean(probs[inside] > 0.7) > 0.8
    assert np.all(probs[gap] < 0.3)
    assert np.all(probs[t < speech.segments[0][0] - 0.05] < 0.1)


def test_stream_follows_model_input_convention(speech_16k):
    # The model wants each window with the previous window's last 64 samples in front
    # (zeros at first) and its own state fed back; the stream must do exactly that.
    model = SileroVADModel.shared()
    s = model.stream(16000)
    ws = _windows(speech_16k.pcm, 16000)[15:45]
    state = np.zeros((2, 1, 128), np.float32)
    context = np.zeros(64, np.float32)
    for w in ws:
        x = np.frombuffer(w, "<i2").astype(np.float32) / 32768
        inp = np.concatenate([context, x])[None, :]
        out, state = model.infer(inp, state, 16000)
        context = inp[0, -64:]
        assert s.probability(w) == pytest.approx(float(out[0, 0]), abs=1e-6)


def test_reset_and_input_types(speech_8k):
    ws = _windows(speech_8k.pcm, 8000)[10:40]
    s = SileroVADStream(8000)
    first = [s.probability(w) for w in ws]
    s.reset()
    again = [s.probability(np.frombuffer(w, "<i2").copy()) for w in ws]
    assert again == pytest.approx(first, abs=1e-6)
    assert max(first) > 0.9  # the slice holds speech, so the comparison means something


def test_bad_windows():
    s = SileroVADStream(8000)
    with pytest.raises(ValueError, match="256 samples"):
        s.probability(bytes(510))
    with pytest.raises(ValueError, match="int16 array of 256"):
        s.probability(np.zeros(256, np.float32))
