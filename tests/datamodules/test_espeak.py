"""The ctypes binding of libespeak-ng: audio, phoneme and word events, errors."""

from __future__ import annotations

import numpy as np
import pytest

from mohaq.datamodules.espeak import Espeak, EspeakError

SENTENCE = "The quick brown fox jumps over the lazy dog."


@pytest.fixture(scope="module")
def engine() -> Espeak:
    return Espeak.instance()


def test_synthesis_returns_int16_audio_at_22050_hz_with_ordered_events(engine: Espeak) -> None:
    result = engine.synthesize(SENTENCE, voice="en-us+m2", rate=175, pitch=50, pitch_range=50)
    assert result.sample_rate == 22050
    assert result.samples.dtype == np.int16
    assert 1.0 < len(result.samples) / result.sample_rate < 6.0
    assert np.abs(result.samples).max() > 1000  # speech, not silence
    samples = [sample for sample, _ in result.phonemes]
    assert samples == sorted(samples) and 0 <= samples[0] and samples[-1] <= len(result.samples)
    mnemonics = [name for _, name in result.phonemes]
    assert not any(name.startswith(("'", ",")) for name in mnemonics)  # stress marks removed
    assert {"k", "w", "b", "r", "f", "s", "D"} <= set(mnemonics)
    assert len(result.words) == len(SENTENCE.split())
    first = SENTENCE[result.words[1][1] - 1 :][: result.words[1][2]]
    assert first == "quick"


def test_voice_and_prosody_change_the_audio(engine: Espeak) -> None:
    def length(**kwargs: object) -> int:
        settings = {"voice": "en-us+m2", "rate": 175, "pitch": 50, "pitch_range": 50} | kwargs
        return len(engine.synthesize(SENTENCE, **settings).samples)  # type: ignore[arg-type]

    assert length(rate=120) > 1.2 * length(rate=240)
    female = engine.synthesize(SENTENCE, voice="en-us+f3", rate=175, pitch=50, pitch_range=50)
    klatt = engine.synthesize(SENTENCE, voice="en-us+klatt3", rate=175, pitch=50, pitch_range=50)
    assert len(female.samples) > 0 and len(klatt.samples) > 0
    assert [m for _, m in female.phonemes] == [
        m for _, m in klatt.phonemes
    ]  # same words, same phones


def test_unknown_voice_and_out_of_range_values_raise(engine: Espeak) -> None:
    with pytest.raises(EspeakError, match="no voice 'en-us\\+nonexistent'"):
        engine.synthesize(SENTENCE, voice="en-us+nonexistent", rate=175, pitch=50, pitch_range=50)
    with pytest.raises(EspeakError, match="rate must be in \\[80, 450\\], got 20"):
        engine.synthesize(SENTENCE, voice="en-us+m1", rate=20, pitch=50, pitch_range=50)
    with pytest.raises(EspeakError, match="pitch must be in \\[0, 100\\], got 101"):
        engine.synthesize(SENTENCE, voice="en-us+m1", rate=175, pitch=101, pitch_range=50)


def test_one_instance_per_process(engine: Espeak) -> None:
    assert Espeak.instance() is engine


def test_unknown_language_raises(engine: Espeak) -> None:
    with pytest.raises(EspeakError, match="no voice 'xx-nowhere'"):
        engine.synthesize(SENTENCE, voice="xx-nowhere", rate=175, pitch=50, pitch_range=50)
    assert {"m1", "f3", "klatt3"} <= set(engine.variants())
