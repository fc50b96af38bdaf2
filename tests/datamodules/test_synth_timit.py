"""The synthetic TIMIT-format corpus: layout, formats, labels, determinism, errors."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import soundfile as sf

from mohaq.datamodules.phones import PHONES_61
from mohaq.datamodules.sentences import generate_sentence
from mohaq.datamodules.synth_timit import (
    MANIFEST,
    SynthesisError,
    generate_corpus,
    main,
    map_mnemonic,
    phone_segments,
)
from mohaq.datamodules.timit_corpus import read_utterance, scan_corpus


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    generate_corpus(out, speakers=3, utterances_per_speaker=2, seed=7, workers=1)
    return out


def test_ldc_layout_and_names(corpus: Path) -> None:
    wavs = sorted(corpus.glob("*/DR*/*/*.WAV"))
    assert len(wavs) == 6
    parts = {w.parts[-4] for w in wavs}
    assert parts == {"TRAIN", "TEST"}
    for wav in wavs:
        speaker, utterance = wav.parts[-2], wav.stem
        assert speaker[0] in "MF" and speaker[-1].isdigit() and len(speaker) == 5
        assert utterance[:2] in ("SX", "SI") and utterance[2:].isdigit()
        for suffix in (".PHN", ".WRD", ".TXT"):
            assert wav.with_suffix(suffix).is_file()


def test_sphere_16k_16bit_and_contiguous_timit_labels(corpus: Path) -> None:
    for wav in corpus.glob("*/DR*/*/*.WAV"):
        info = sf.info(wav)
        assert (info.format, info.subtype, info.samplerate) == ("NIST", "PCM_16", 16_000)
        lines = [line.split() for line in wav.with_suffix(".PHN").read_text().splitlines()]
        assert int(lines[0][0]) == 0 and int(lines[-1][1]) == info.frames
        assert lines[0][2] == "h#" and lines[-1][2] == "h#"
        for (_, end, _), (start, _, _) in zip(lines, lines[1:]):
            assert end == start
        assert all(phone in PHONES_61 and int(s) < int(e) for s, e, phone in lines)
    # The project's own reader accepts every file (its checks are the strict ones).
    for utterance in scan_corpus(corpus):
        audio, segments = read_utterance(utterance)
        assert len(audio) == segments[-1].end


def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path, corpus: Path) -> None:
    again = tmp_path / "again"
    generate_corpus(again, speakers=3, utterances_per_speaker=2, seed=7, workers=2)
    for path in corpus.glob("*/DR*/*/*.*"):
        assert path.read_bytes() == (again / path.relative_to(corpus)).read_bytes(), path
    other = tmp_path / "other"
    generate_corpus(other, speakers=3, utterances_per_speaker=2, seed=8, workers=1)
    assert sorted(p.name for p in other.glob("*/DR*/*")) != sorted(p.name for p in corpus.glob("*/DR*/*"))


def test_manifest_makes_a_rerun_a_no_op_and_user_folders_are_protected(tmp_path: Path, corpus: Path) -> None:
    before = {p: p.stat().st_mtime_ns for p in corpus.rglob("*.WAV")}
    summary = generate_corpus(corpus, speakers=3, utterances_per_speaker=2, seed=7)
    assert {p: p.stat().st_mtime_ns for p in corpus.rglob("*.WAV")} == before
    assert summary.utterances == 6 and summary.frames > 0
    assert json.loads((corpus / MANIFEST).read_text())["summary"]["utterances"] == 6
    user = tmp_path / "user"
    user.mkdir()
    (user / "thesis.tex").write_text("precious")
    with pytest.raises(SynthesisError, match="not empty"):
        generate_corpus(user, speakers=3, utterances_per_speaker=1, seed=0)
    assert (user / "thesis.tex").read_text() == "precious"


def test_cli_rejects_bad_arguments_naming_them(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path / "x"), "--speakers", "0"])
    assert "--speakers must be >= 3" in capsys.readouterr().err


def test_every_mnemonic_espeak_produces_is_mapped() -> None:
    from mohaq.datamodules.espeak import Espeak

    engine = Espeak.instance()
    rng = random.Random(1)
    for index in range(60):
        voice = ("en-us+m1", "en-us+f2", "en-us+m5")[index % 3]
        synthesis = engine.synthesize(generate_sentence(rng), voice=voice, rate=170, pitch=50, pitch_range=50)
        segments = phone_segments(synthesis.phonemes, len(synthesis.samples), len(synthesis.samples), 0)
        assert all(phone in PHONES_61 for _, _, phone in segments)
    with pytest.raises(SynthesisError, match="no TIMIT mapping"):
        map_mnemonic("not-a-phoneme")


def test_sentences_are_many_and_distinct() -> None:
    rng = random.Random(0)
    sentences = [generate_sentence(rng) for _ in range(200)]
    assert len(set(sentences)) > 190
