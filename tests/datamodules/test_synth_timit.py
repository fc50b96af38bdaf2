"""The synthetic TIMIT-format corpus: layout, formats, labels, determinism, errors."""

from __future__ import annotations

import json
import logging
import random
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from mohaq.datamodules import sentences
from mohaq.datamodules.phones import PHONES_61
from mohaq.datamodules.sentences import generate_sentence
from mohaq.datamodules.synth_timit import (
    FEMALE_VARIANTS,
    MALE_VARIANTS,
    MANIFEST,
    PARTIAL_MANIFEST,
    SynthesisError,
    add_noise,
    generate_corpus,
    main,
    map_mnemonic,
    phone_segments,
    resample,
    speaker_specs,
    verify_corpus,
    word_segments,
)
from mohaq.datamodules.timit_corpus import read_utterance, scan_corpus

TINY = {"speakers": 3, "utterances_per_speaker": 2, "seed": 7}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    generate_corpus(out, **TINY, workers=1)
    return out


def _files(root: Path) -> dict[Path, bytes]:
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.glob("*/DR*/*/*.*"))}


def test_ldc_layout_and_timit_names(corpus: Path) -> None:
    wavs = sorted(corpus.glob("*/*/*/*.WAV"))
    assert len(wavs) == 6
    assert {w.parts[-4] for w in wavs} == {"TRAIN", "TEST"}
    for wav in wavs:
        dialect, speaker, utterance = wav.parts[-3], wav.parts[-2], wav.stem
        assert re.fullmatch(r"DR[1-8]", dialect), dialect
        assert re.fullmatch(r"[MF][A-Z]{3}[0-9]", speaker), speaker
        assert re.fullmatch(r"SX[0-9]{1,3}|SI[0-9]{3,4}", utterance), utterance
        for suffix in (".PHN", ".WRD", ".TXT"):
            assert wav.with_suffix(suffix).is_file()
    assert not list(corpus.rglob("*.tmp")) and not (corpus / PARTIAL_MANIFEST).exists()


def test_speaker_sex_matches_voice_variant_and_split_is_deterministic() -> None:
    specs = speaker_specs(40, 0, 0.3)
    assert specs == speaker_specs(40, 0, 0.3)
    assert len({s.speaker_id for s in specs}) == 40
    assert sum(s.part == "TEST" for s in specs) == 12
    for spec in specs:
        variant = spec.voice.split("+")[1]
        assert variant in (MALE_VARIANTS if spec.speaker_id[0] == "M" else FEMALE_VARIANTS)
    assert {s.speaker_id[0] for s in specs} == {"M", "F"}
    assert {s.dialect for s in specs} == {f"DR{n}" for n in range(1, 9)}
    assert len({(s.voice, s.pitch, s.rate) for s in specs}) == 40


def test_sphere_16k_16bit_and_contiguous_timit_labels(corpus: Path) -> None:
    closures = 0
    for wav in corpus.glob("*/DR*/*/*.WAV"):
        info = sf.info(wav)
        assert (info.format, info.subtype, info.samplerate, info.channels) == (
            "NIST",
            "PCM_16",
            16_000,
            1,
        )
        lines = [line.split() for line in wav.with_suffix(".PHN").read_text().splitlines()]
        assert int(lines[0][0]) == 0 and int(lines[-1][1]) == info.frames
        assert lines[0][2] == "h#" and lines[-1][2] == "h#"
        for (_, end, _), (start, _, _) in zip(lines, lines[1:], strict=False):
            assert end == start
        assert all(phone in PHONES_61 and int(s) < int(e) for s, e, phone in lines)
        phones = [phone for _, _, phone in lines]
        closures += sum(
            a.endswith("cl") and b == a[:-2] for a, b in zip(phones, phones[1:], strict=False)
        )
        text = wav.with_suffix(".TXT").read_text().split(maxsplit=2)
        assert text[:2] == ["0", str(info.frames)]
        words = [line.split() for line in wav.with_suffix(".WRD").read_text().splitlines()]
        assert [w for _, _, w in words] == re.sub(r"[^a-z ]", "", text[2].lower()).split()
        boundaries = {int(s) for s, _, _ in lines}
        assert all(int(s) in boundaries and int(s) < int(e) <= info.frames for s, e, _ in words)
    assert closures >= 6  # stops come as closure + release, as TIMIT labels them
    # The project's own reader accepts every file (its checks are the strict ones).
    for utterance in scan_corpus(corpus):
        audio, segments = read_utterance(utterance)
        assert len(audio) == segments[-1].end


def test_same_seed_same_bytes_any_worker_count_other_seed_differs(
    tmp_path: Path, corpus: Path
) -> None:
    again = tmp_path / "again"
    generate_corpus(again, **TINY, workers=2)
    assert _files(again) == _files(corpus)
    other = tmp_path / "other"
    generate_corpus(other, **{**TINY, "seed": 8}, workers=2)
    assert set(_files(other).values()).isdisjoint(_files(corpus).values())


def test_manifest_makes_a_rerun_a_no_op(corpus: Path, capsys: pytest.CaptureFixture) -> None:
    before = {p: p.stat().st_mtime_ns for p in corpus.rglob("*.WAV")}
    summary = generate_corpus(corpus, **TINY)
    assert {p: p.stat().st_mtime_ns for p in corpus.rglob("*.WAV")} == before
    assert (summary.train_speakers, summary.test_speakers, summary.utterances) == (1, 2, 6)
    assert summary.frames == sum(1 + (sf.info(p).frames - 400) // 160 for p in before)
    assert summary.audio_seconds == pytest.approx(
        sum(sf.info(p).duration for p in before), abs=1e-2
    )
    assert json.loads((corpus / MANIFEST).read_text())["summary"]["utterances"] == 6
    assert (
        main(
            [
                "--out",
                str(corpus),
                "--speakers",
                "3",
                "--utterances-per-speaker",
                "2",
                "--seed",
                "7",
            ]
        )
        == 0
    )
    assert "6 utterances" in capsys.readouterr().out


def test_other_parameters_or_an_interrupted_run_regenerate(tmp_path: Path) -> None:
    out = tmp_path / "corpus"
    generate_corpus(out, speakers=3, utterances_per_speaker=1, seed=1, workers=1)
    summary = generate_corpus(out, speakers=4, utterances_per_speaker=1, seed=1, workers=1)
    assert summary.utterances == 4 and len(list(out.glob("*/DR*/*/*.WAV"))) == 4
    complete = _files(out)
    # A killed run: no manifest, a partial marker, a missing utterance.
    (out / MANIFEST).rename(out / PARTIAL_MANIFEST)
    next(out.glob("*/DR*/*/*.WAV")).unlink()
    generate_corpus(out, speakers=4, utterances_per_speaker=1, seed=1, workers=1)
    assert _files(out) == complete and (out / MANIFEST).is_file()
    assert not (out / PARTIAL_MANIFEST).exists()


def test_damaged_or_missing_files_are_regenerated_and_reported(
    tmp_path: Path, corpus: Path, caplog: pytest.LogCaptureFixture
) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(corpus, copy)
    wav = sorted(copy.glob("TEST/DR*/*/*.WAV"))[0]
    data = bytearray(wav.read_bytes())
    data[2048 : 2048 + 512] = bytes(512)  # zeroed in place: same size
    wav.write_bytes(bytes(data))
    phn = sorted(copy.glob("TRAIN/DR*/*/*.PHN"))[0]
    phn.unlink()
    with caplog.at_level(logging.WARNING):
        damaged = verify_corpus(copy, workers=1)
    assert damaged == sorted(p.relative_to(copy).as_posix() for p in (wav, phn))
    assert "2 file(s) are damaged or missing" in caplog.text and wav.name in caplog.text
    assert "repaired; the regenerated files match their checksums" in caplog.text
    assert _files(copy) == _files(corpus)
    assert verify_corpus(copy) == []


def test_a_corpus_made_before_checksums_gets_them_recorded(tmp_path: Path, corpus: Path) -> None:
    copy = tmp_path / "old"
    shutil.copytree(corpus, copy)
    manifest = json.loads((copy / MANIFEST).read_text())
    recorded = manifest.pop("checksums")
    (copy / MANIFEST).write_text(json.dumps(manifest))
    generate_corpus(copy, **TINY)  # the same corpus: kept as it is, checksums added
    assert json.loads((copy / MANIFEST).read_text())["checksums"] == recorded
    assert len(recorded) == 4 * 6  # WAV, PHN, WRD, TXT of 6 utterances


def test_an_output_path_that_is_a_file_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    taken = tmp_path / "notes.txt"
    taken.write_text("mine")
    with pytest.raises(SynthesisError, match="notes.txt' is a file, not a folder"):
        generate_corpus(taken, speakers=3, utterances_per_speaker=1, seed=0)
    with pytest.raises(SynthesisError, match="cannot write the corpus into .*Not a directory"):
        generate_corpus(taken / "corpus", speakers=3, utterances_per_speaker=1, seed=0)
    arguments = ["--speakers", "3", "--utterances-per-speaker", "1", "--seed", "0"]
    assert main(["--out", str(taken), *arguments]) == 3  # a data error (mohaq.cli_errors)
    assert "data error: " in capsys.readouterr().err
    assert taken.read_text() == "mine"


def test_user_folders_are_never_overwritten(tmp_path: Path) -> None:
    user = tmp_path / "user"
    user.mkdir()
    (user / "thesis.tex").write_text("precious")
    with pytest.raises(SynthesisError, match="not empty and holds no corpus.json"):
        generate_corpus(user, speakers=3, utterances_per_speaker=1, seed=0)
    assert [p.name for p in user.iterdir()] == ["thesis.tex"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"--speakers": ["0"]}, "argument --speakers: must be >= 3, got 0"),
        (
            {"--utterances-per-speaker": ["zero"]},
            "argument --utterances-per-speaker: expected an integer",
        ),
        ({"--snr-db": ["20", "5"]}, "argument --snr-db: LOW must be <= HIGH"),
        ({"--workers": ["-1"]}, "argument --workers: must be >= 0"),
        ({"--test-speaker-fraction": ["1.5"]}, "argument --test-speaker-fraction: must be in"),
    ],
)
def test_cli_rejects_bad_arguments_naming_them(
    tmp_path: Path, capsys: pytest.CaptureFixture, change: dict[str, list[str]], message: str
) -> None:
    options = {
        "--out": [str(tmp_path / "x")],
        "--speakers": ["3"],
        "--utterances-per-speaker": ["1"],
    }
    options |= {"--seed": ["0"], **change}
    with pytest.raises(SystemExit) as exit_info:
        main([item for key, values in options.items() for item in [key, *values]])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_generate_corpus_rejects_bad_values() -> None:
    with pytest.raises(SynthesisError, match="speakers must be >= 3"):
        generate_corpus("unused", speakers=2, utterances_per_speaker=1, seed=0)
    with pytest.raises(SynthesisError, match="snr_db must be"):
        generate_corpus("unused", speakers=3, utterances_per_speaker=1, seed=0, snr_db=(10.0, 5.0))


def test_every_mnemonic_espeak_produces_is_mapped() -> None:
    from mohaq.datamodules.espeak import Espeak

    engine = Espeak.instance()
    vocabulary = sorted(
        set(sentences.DETERMINERS + sentences.ADJECTIVES + sentences.NOUNS + sentences.TRANSITIVE_VERBS
            + sentences.INTRANSITIVE_VERBS + sentences.PREPOSITIONS + sentences.ADVERBS
            + sentences.CONJUNCTIONS + sentences.NAMES)
    )  # fmt: skip
    texts = [" ".join(vocabulary[i : i + 25]) + "." for i in range(0, len(vocabulary), 25)]
    rng = random.Random(1)
    texts += [generate_sentence(rng) for _ in range(150)]
    voices = [f"en-us+{v}" for v in MALE_VARIANTS + FEMALE_VARIANTS]
    seen: set[str] = set()
    for index, text in enumerate(texts):
        synthesis = engine.synthesize(
            text, voice=voices[index % len(voices)], rate=170, pitch=50, pitch_range=50
        )
        seen.update(m for _, m in synthesis.phonemes)
        n = len(synthesis.samples)
        segments = phone_segments(synthesis.phonemes, n, n, 0, synthesis.samples / 32768.0)
        assert all(phone in PHONES_61 for _, _, phone in segments)
    assert len(seen) > 35
    with pytest.raises(SynthesisError, match="no TIMIT mapping"):
        map_mnemonic("not-a-phoneme")


def test_phone_segments_by_hand() -> None:
    # Silence, then "at" + pause + "a": espeak's t event is its burst; the
    # closure is the silent end of the vowel before it.
    audio = np.ones(2000)
    audio[540:700] = 0.0  # 160 samples of closure silence before the burst at 700
    events = [(100, "a"), (700, "t"), (900, "_"), (1200, "a"), (1800, "_:")]
    assert phone_segments(events, 1800, 2000, 100, audio) == [
        (0, 100, "h#"), (100, 540, "ae"), (540, 700, "tcl"), (700, 900, "t"),
        (900, 1200, "pau"), (1200, 1800, "ae"), (1800, 2000, "h#"),
    ]  # fmt: skip
    # Without audio (or without a silent stretch) the stop's own segment is split 60/40.
    assert phone_segments([(0, "d"), (100, "i:")], 200, 200, 0) == [
        (0, 60, "dcl"), (60, 100, "d"), (100, 200, "iy"),
    ]  # fmt: skip


def test_word_segments_end_at_pauses_and_snap_to_phones() -> None:
    segments = [(0, 10, "h#"), (10, 20, "ae"), (20, 30, "pau"), (30, 40, "b"), (40, 50, "h#")]
    assert word_segments([(12, "a"), (29, "b")], segments) == [(10, 20, "a"), (30, 40, "b")]


def test_resample_keeps_the_band_and_rejects_aliases() -> None:
    n = np.arange(22050)
    low = resample(np.sin(2 * np.pi * 1000 * n / 22050), 22050, 16000)
    assert len(low) == 16000
    expected = np.sin(2 * np.pi * 1000 * np.arange(16000) / 16000)
    assert np.abs(low - expected)[50:-50].max() < 1e-3
    high = resample(np.sin(2 * np.pi * 10_000 * n / 22050), 22050, 16000)  # above 8 kHz
    assert np.sqrt(np.mean(high[50:-50] ** 2)) < 1e-3


def test_noise_is_added_at_the_requested_snr() -> None:
    rng = np.random.default_rng(0)
    speech = np.sign(np.sin(np.arange(32000) / 5.0 + 0.1))  # every sample active, power 1
    babble = rng.standard_normal(8000)
    for snr in (5.0, 20.0):
        noisy = add_noise(speech, snr, np.random.default_rng(1), babble)
        noise = noisy - speech
        assert 10 * np.log10(1.0 / np.mean(noise**2)) == pytest.approx(snr, abs=1e-6)


def test_sentences_are_many_and_distinct() -> None:
    rng = random.Random(0)
    generated = [generate_sentence(rng) for _ in range(200)]
    assert len(set(generated)) > 150
    assert sentences.VOCABULARY_SIZE >= 250
