"""Reading LDC TIMIT trees: layout, casing, audio variants, splits and every bad-input error.

`write_utterance` also builds the fixtures of test_timit_datamodule.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from mohaq.datamodules.speakers import CORE_TEST_SPEAKERS, DEV_SPEAKERS, split_test_speakers
from mohaq.datamodules.timit import assign_splits
from mohaq.datamodules.timit_corpus import (
    CorpusError,
    find_timit_root,
    read_audio,
    read_phn,
    read_utterance,
    scan_corpus,
)

DEFAULT_PHONES = ("h#", "sh", "iy", "q", "h#")


def write_utterance(
    root: Path,
    part: str,
    dialect: str,
    speaker: str,
    utterance: str,
    *,
    seconds: float = 0.5,
    phones: Sequence[str] = DEFAULT_PHONES,
    upper: bool = True,
    audio: str = "nist",
    sample_rate: int = 16_000,
    seed: int = 0,
    phn_text: str | None = None,
) -> Path:
    """Writes one utterance in the LDC layout; returns its speaker folder.

    Args:
        audio: ``nist`` (<UTT>.WAV), ``riff`` (<UTT>.WAV.wav only) or ``both``.
        phn_text: the PHN content as is; None splits the samples evenly among ``phones``.
    """
    case = str.upper if upper else str.lower
    folder = root / case(part) / case(dialect) / case(speaker)
    folder.mkdir(parents=True, exist_ok=True)
    num_samples = int(seconds * sample_rate)
    rng = np.random.default_rng(seed)
    t = np.arange(num_samples) / sample_rate
    wave = 0.3 * np.sin(2 * np.pi * (300 + 50 * seed) * t) + 0.05 * rng.standard_normal(num_samples)
    stem = case(utterance)
    if audio in ("nist", "both"):
        sf.write(
            folder / f"{stem}{case('.wav')}", wave, sample_rate, format="NIST", subtype="PCM_16"
        )
    if audio in ("riff", "both"):
        sf.write(
            folder / f"{stem}{case('.wav')}.wav", wave, sample_rate, format="WAV", subtype="PCM_16"
        )
    if phn_text is None:
        bounds = np.linspace(0, num_samples, len(phones) + 1).astype(int)
        phn_text = "".join(f"{bounds[i]} {bounds[i + 1]} {p}\n" for i, p in enumerate(phones))
    (folder / f"{stem}{case('.phn')}").write_text(phn_text)
    (folder / f"{stem}{case('.wrd')}").write_text(f"0 {num_samples} she\n")
    (folder / f"{stem}{case('.txt')}").write_text(f"0 {num_samples} She.\n")
    return folder


def write_small_corpus(root: Path, *, upper: bool = True, seconds: float = 0.5) -> Path:
    """TRAIN: 2 speakers x (SA1, SI1, SX1); TEST: 4 speakers x (SA1, SI1, SX1). Not the real TIMIT."""
    for part, speakers in (
        ("TRAIN", ("FCJF0", "MDAW1")),
        ("TEST", ("FAAA0", "MBBB0", "FCCC0", "MDDD0")),
    ):
        for number, speaker in enumerate(speakers):
            for utterance in ("SA1", "SI1", "SX1"):
                write_utterance(
                    root,
                    part,
                    f"DR{number % 2 + 1}",
                    speaker,
                    utterance,
                    upper=upper,
                    seconds=seconds,
                    seed=number,
                )
    return root


# -- layout --------------------------------------------------------------------------------------
@pytest.mark.parametrize("upper", [True, False])
def test_scan_finds_utterances_in_upper_and_lower_case_trees(tmp_path: Path, upper: bool) -> None:
    write_small_corpus(tmp_path, upper=upper)
    utterances = scan_corpus(tmp_path)
    assert len(utterances) == 6 * 2  # SA1 dropped
    first = utterances[0]
    assert (first.utterance_id, first.speaker, first.part, first.dialect) == (
        "FCJF0_SI1",
        "FCJF0",
        "TRAIN",
        "DR1",
    )
    assert first.audio_path.name == ("SI1.WAV" if upper else "si1.wav")
    assert first.phn_path is not None and first.phn_path.name.upper() == "SI1.PHN"
    audio, segments = read_utterance(first)
    assert audio.shape == (8000,) and audio.dtype == np.float32
    assert [s.phone for s in segments] == list(DEFAULT_PHONES)


def test_sa_sentences_are_excluded_unless_asked(tmp_path: Path) -> None:
    write_small_corpus(tmp_path)
    ids = {u.utterance_id for u in scan_corpus(tmp_path)}
    assert not any(i.endswith("_SA1") for i in ids)
    with_sa = {u.utterance_id for u in scan_corpus(tmp_path, include_sa=True)}
    assert with_sa - ids == {
        f"{s}_SA1" for s in ("FCJF0", "MDAW1", "FAAA0", "MBBB0", "FCCC0", "MDDD0")
    }


def test_riff_copy_is_preferred_and_riff_only_works(tmp_path: Path) -> None:
    write_utterance(tmp_path, "TRAIN", "DR1", "FCJF0", "SI1", audio="both")
    write_utterance(tmp_path, "TRAIN", "DR1", "FCJF0", "SI2", audio="riff")
    write_utterance(tmp_path, "TEST", "DR1", "FAAA0", "SI1")
    by_id = {u.utterance_id: u for u in scan_corpus(tmp_path)}
    assert by_id["FCJF0_SI1"].audio_path.name == "SI1.WAV.wav"
    assert by_id["FCJF0_SI2"].audio_path.name == "SI2.WAV.wav"
    assert by_id["FAAA0_SI1"].audio_path.name == "SI1.WAV"
    # Both variants hold the same samples; the RIFF one must decode to them.
    nist = read_audio(tmp_path / "TRAIN/DR1/FCJF0/SI1.WAV")
    np.testing.assert_array_equal(read_audio(by_id["FCJF0_SI1"].audio_path), nist)


def test_wrapper_folder_is_descended(tmp_path: Path) -> None:
    write_small_corpus(tmp_path / "TIMIT")
    assert find_timit_root(tmp_path) == tmp_path / "TIMIT"
    assert len(scan_corpus(tmp_path)) == 12


# -- splits --------------------------------------------------------------------------------------
def test_real_timit_uses_kaldi_dev_and_core_test_lists(tmp_path: Path) -> None:
    write_utterance(tmp_path, "TRAIN", "DR1", "FCJF0", "SI1", seconds=0.2)
    dev_present = sorted(DEV_SPEAKERS)[:3]
    unused = ["MZZZ0", "FYYY0"]  # in TEST but in neither Kaldi list
    for speaker in sorted(CORE_TEST_SPEAKERS) + dev_present + unused:
        write_utterance(tmp_path, "TEST", "DR1", speaker.lower(), "si7", seconds=0.2, upper=False)
    splits = assign_splits(scan_corpus(tmp_path))
    assert {u.speaker for u in splits["test"]} == CORE_TEST_SPEAKERS
    assert {u.speaker for u in splits["dev"]} == set(dev_present)
    assert [u.utterance_id for u in splits["train"]] == ["FCJF0_SI1"]


def test_other_corpus_splits_test_speakers_alternately(tmp_path: Path) -> None:
    write_small_corpus(tmp_path)
    splits = assign_splits(scan_corpus(tmp_path))
    dev = {u.speaker for u in splits["dev"]}
    test = {u.speaker for u in splits["test"]}
    # Sorted FAAA0, FCCC0, MBBB0, MDDD0 -> dev, test, dev, test.
    assert dev == {"FAAA0", "MBBB0"} and test == {"FCCC0", "MDDD0"}
    assert split_test_speakers(["mddd0", "FAAA0", "FCCC0", "MBBB0"]) == (
        ["FAAA0", "MBBB0"],
        ["FCCC0", "MDDD0"],
    )


def test_kaldi_lists_have_the_standard_sizes() -> None:
    assert len(DEV_SPEAKERS) == 50 and len(CORE_TEST_SPEAKERS) == 24
    assert {"FAKS0", "MRWS1", "FADG0"} <= DEV_SPEAKERS
    assert {"MDAB0", "FMLD0", "MTAS1"} <= CORE_TEST_SPEAKERS


# -- bad input -----------------------------------------------------------------------------------
def test_missing_empty_and_non_timit_folders(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="does not exist"):
        scan_corpus(tmp_path / "nowhere")
    with pytest.raises(CorpusError, match="is empty.*TRAIN/ and TEST/"):
        scan_corpus(tmp_path)
    (tmp_path / "music").mkdir()
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(CorpusError, match=r"not a TIMIT tree.*notes\.txt.*DR<n>/<SPEAKER>"):
        scan_corpus(tmp_path)


def test_part_without_speakers(tmp_path: Path) -> None:
    write_utterance(tmp_path, "TRAIN", "DR1", "FCJF0", "SI1")
    (tmp_path / "TEST").mkdir()
    with pytest.raises(CorpusError, match="TEST.*holds no utterance"):
        scan_corpus(tmp_path)


def _one(tmp_path: Path, **kwargs: object) -> Path:
    return write_utterance(tmp_path, "TRAIN", "DR1", "FCJF0", "SI1", **kwargs)


def test_unreadable_audio(tmp_path: Path) -> None:
    path = _one(tmp_path) / "SI1.WAV"
    path.write_bytes(b"not audio at all" * 64)
    with pytest.raises(CorpusError, match=r"cannot read audio file .*FCJF0/SI1\.WAV"):
        read_audio(path)


@pytest.mark.parametrize("audio, name", [("nist", "SI1.WAV"), ("riff", "SI1.WAV.wav")])
def test_truncated_audio(tmp_path: Path, audio: str, name: str) -> None:
    path = _one(tmp_path, audio=audio) / name
    path.write_bytes(path.read_bytes()[:-3001])
    with pytest.raises(CorpusError, match=rf"{name}.*truncated.*8000 samples"):
        read_audio(path)


def test_wrong_sample_rate(tmp_path: Path) -> None:
    path = _one(tmp_path, sample_rate=8000) / "SI1.WAV"
    with pytest.raises(CorpusError, match=r"SI1\.WAV.*8000 Hz; 16000 Hz is required"):
        read_audio(path)


def test_missing_phn(tmp_path: Path) -> None:
    (_one(tmp_path) / "SI1.PHN").unlink()
    (utterance,) = scan_corpus_part(tmp_path)
    with pytest.raises(CorpusError, match=r"missing PHN file for audio .*SI1\.WAV"):
        read_utterance(utterance)
    with pytest.raises(CorpusError, match=r"missing PHN file .*SI2\.PHN"):
        read_phn(tmp_path / "SI2.PHN", 8000)


def scan_corpus_part(tmp_path: Path) -> list:
    write_utterance(tmp_path, "TEST", "DR1", "FAAA0", "SI1")
    return [u for u in scan_corpus(tmp_path) if u.part == "TRAIN"]


@pytest.mark.parametrize(
    "text, message",
    [
        ("0 4000 h#\n4000 8000 zz\n", r"line 2: unknown phone symbol 'zz'; allowed: aa, ae"),
        (
            "0 4000 h#\n4100 8000 iy\n",
            r"line 2: segment starts at 4100 but the previous one ends at 4000",
        ),
        ("0 4000 h#\n4000 4000 iy\n", r"line 2: segment end 4000 <= start 4000"),
        ("0 4000 h#\n4000 9000 iy\n", r"line 2: segment end 9000 is past the audio's 8000 samples"),
        ("0 4000\n", r"line 1: expected 'START END PHONE'"),
        ("\n", r"holds no segment"),
    ],
)
def test_bad_phn(tmp_path: Path, text: str, message: str) -> None:
    path = _one(tmp_path, phn_text=text) / "SI1.PHN"
    with pytest.raises(CorpusError, match=r"SI1\.PHN.*" + message):
        read_phn(path, 8000)
