"""The synthetic TIMIT-format corpus: speech from libespeak-ng in the exact LDC layout.

For users without the LDC corpus (and for every test and the quickstart), this
writes ``OUT/TRAIN|TEST/DR<n>/<SPEAKER>/<UTT>.WAV`` (NIST SPHERE, 16 kHz,
16-bit PCM) with ``.PHN`` (sample-exact phone boundaries in TIMIT's 61
symbols, from espeak's phoneme events), ``.WRD`` and ``.TXT``. Speakers differ
by voice variant, pitch, pitch range and rate; sentences come from a grammar
over a ~300-word vocabulary; noise at a random SNR per utterance keeps the task
from being trivial. The output depends only on the arguments, not on the
number of worker processes.

Command line::

    mohaq-synth-timit --out DIR --speakers N --utterances-per-speaker K --seed S
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from mohaq.datamodules.phones import PHONES_61
from mohaq.datamodules.sentences import generate_sentence

SAMPLE_RATE = 16_000
MANIFEST = "corpus.json"
FORMAT_VERSION = 1
MALE_VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7")
FEMALE_VARIANTS = ("f1", "f2", "f3", "f4", "f5")

# espeak's English mnemonics -> TIMIT symbols with their share of the segment.
# Stops and affricates get a closure before the release, as TIMIT labels them.
_STOP = 0.6
ESPEAK_TO_TIMIT: dict[str, tuple[tuple[str, float], ...]] = {
    "p": (("pcl", _STOP), ("p", 1 - _STOP)), "b": (("bcl", _STOP), ("b", 1 - _STOP)),
    "t": (("tcl", _STOP), ("t", 1 - _STOP)), "d": (("dcl", _STOP), ("d", 1 - _STOP)),
    "k": (("kcl", _STOP), ("k", 1 - _STOP)), "g": (("gcl", _STOP), ("g", 1 - _STOP)),
    "x": (("kcl", _STOP), ("k", 1 - _STOP)),
    "tS": (("tcl", 0.4), ("ch", 0.6)), "dZ": (("dcl", 0.4), ("jh", 0.6)),
    "t#": (("dx", 1.0),), "?": (("q", 1.0),),
    "f": (("f", 1.0),), "v": (("v", 1.0),), "T": (("th", 1.0),), "D": (("dh", 1.0),),
    "s": (("s", 1.0),), "z": (("z", 1.0),), "S": (("sh", 1.0),), "Z": (("zh", 1.0),),
    "h": (("hh", 1.0),), "C": (("hh", 1.0),),
    "m": (("m", 1.0),), "n": (("n", 1.0),), "N": (("ng", 1.0),),
    "m-": (("em", 1.0),), "n-": (("en", 1.0),), "l-": (("el", 1.0),), "@L": (("el", 1.0),),
    "l": (("l", 1.0),), "r": (("r", 1.0),), "r-": (("r", 1.0),), "w": (("w", 1.0),),
    "W": (("w", 1.0),), "j": (("y", 1.0),),
    "a": (("ae", 1.0),), "aa": (("ae", 1.0),), "a#": (("ax", 1.0),), "A": (("aa", 1.0),),
    "A:": (("aa", 1.0),), "0": (("aa", 1.0),), "A@": (("aa", 0.6), ("r", 0.4)),
    "E": (("eh", 1.0),), "e": (("eh", 1.0),), "e@": (("eh", 0.6), ("r", 0.4)),
    "eI": (("ey", 1.0),), "I": (("ih", 1.0),), "I#": (("ix", 1.0),), "I2": (("ix", 1.0),),
    "i": (("iy", 1.0),), "i:": (("iy", 1.0),), "i@": (("ih", 0.6), ("ax", 0.4)),
    "i@3": (("ih", 0.6), ("r", 0.4)), "I@": (("ih", 0.6), ("ax", 0.4)),
    "O:": (("ao", 1.0),), "O2": (("ao", 1.0),), "O": (("ao", 1.0),),
    "O@": (("ao", 0.6), ("r", 0.4)), "o@": (("ao", 0.6), ("r", 0.4)), "OI": (("oy", 1.0),),
    "oU": (("ow", 1.0),), "o": (("ow", 1.0),), "U": (("uh", 1.0),), "U@": (("uh", 0.6), ("r", 0.4)),
    "u:": (("uw", 1.0),), "u": (("uw", 1.0),), "V": (("ah", 1.0),),
    "@": (("ax", 1.0),), "@2": (("ax", 1.0),), "@5": (("ax", 1.0),), "3": (("axr", 1.0),),
    "3:": (("er", 1.0),), "aI": (("ay", 1.0),), "aI@": (("ay", 0.6), ("ax", 0.4)),
    "aI3": (("ay", 0.6), ("axr", 0.4)), "aU": (("aw", 1.0),), "aU@": (("aw", 0.6), ("ax", 0.4)),
}  # fmt: skip
PAUSES = frozenset({"_", "_:", "_!", "_|", "_^_"})
# Event mnemonics that mark no sound of their own (e.g. a palatalisation mark).
MODIFIERS = frozenset({";", ""})

assert all(p in PHONES_61 for parts in ESPEAK_TO_TIMIT.values() for p, _ in parts)


class SynthesisError(ValueError):
    """Bad generator arguments, or an espeak mnemonic the phone table does not map."""


@dataclass(frozen=True)
class CorpusSummary:
    """What a generation produced."""

    train_speakers: int
    test_speakers: int
    utterances: int
    audio_seconds: float
    frames: int
    seconds_taken: float

    @property
    def audio_hours(self) -> float:
        return self.audio_seconds / 3600.0


@dataclass(frozen=True)
class SpeakerSpec:
    speaker_id: str
    part: str
    dialect: str
    voice: str
    pitch: int
    pitch_range: int
    rate: int
    index: int


# -- phones ---------------------------------------------------------------------------------------
def map_mnemonic(mnemonic: str) -> tuple[tuple[str, float], ...]:
    """TIMIT phones (with duration shares) of one espeak mnemonic.

    Raises:
        SynthesisError: for a mnemonic the table does not know.
    """
    try:
        return ESPEAK_TO_TIMIT[mnemonic]
    except KeyError:
        raise SynthesisError(
            f"espeak phoneme {mnemonic!r} has no TIMIT mapping; known: {sorted(ESPEAK_TO_TIMIT)}"
        ) from None


def phone_segments(
    events: list[tuple[int, str]], speech_end: int, total: int, lead: int
) -> list[tuple[int, int, str]]:
    """Contiguous TIMIT segments covering ``[0, total)`` from espeak phoneme events.

    Args:
        events: (sample, mnemonic) at the output rate, offset by ``lead``.
        speech_end: sample where the last phone ends (trailing silence after it).
        total: number of samples.
        lead: leading silence before the first event.
    """
    marks = [(s, m) for s, m in events if m not in MODIFIERS]
    marks.sort(key=lambda item: item[0])
    raw: list[tuple[int, int, str]] = []
    for position, (start, mnemonic) in enumerate(marks):
        end = marks[position + 1][0] if position + 1 < len(marks) else speech_end
        end = min(end, speech_end)
        if end > start:
            raw.append((start, end, mnemonic))
    segments: list[tuple[int, int, str]] = []

    def push(start: int, end: int, phone: str) -> None:
        if end <= start:
            return
        if segments and segments[-1][2] == phone and phone in ("h#", "pau"):
            segments[-1] = (segments[-1][0], end, phone)
        else:
            segments.append((start, end, phone))

    push(0, raw[0][0] if raw else total, "h#")
    for index, (start, end, mnemonic) in enumerate(raw):
        if mnemonic in PAUSES:
            edge = index == 0 or index == len(raw) - 1
            push(start, end, "h#" if edge else "pau")
            continue
        cursor = start
        parts = map_mnemonic(mnemonic)
        for number, (phone, share) in enumerate(parts):
            stop = end if number == len(parts) - 1 else cursor + int(round(share * (end - start)))
            push(cursor, stop, phone)
            cursor = stop
    push(segments[-1][1] if segments else 0, total, "h#")
    return segments


# -- audio ----------------------------------------------------------------------------------------
def resample(samples: np.ndarray, source_rate: int, target_rate: int) -> np.ndarray:
    """Band-limited resampling by truncating/zero-padding the spectrum."""
    count = int(round(len(samples) * target_rate / source_rate))
    spectrum = np.fft.rfft(samples.astype(np.float64))
    keep = count // 2 + 1
    if keep <= len(spectrum):
        spectrum = spectrum[:keep]
    else:
        spectrum = np.concatenate([spectrum, np.zeros(keep - len(spectrum), complex)])
    return np.fft.irfft(spectrum, n=count) * (count / len(samples))


def add_noise(speech: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """Adds white plus low-frequency (brown) noise at ``snr_db`` relative to the speech power."""
    active = speech[np.abs(speech) > 0.02 * np.abs(speech).max()] if speech.any() else speech
    power = float(np.mean(active**2)) if active.size else 1e-6
    white = rng.standard_normal(len(speech))
    brown = np.cumsum(rng.standard_normal(len(speech)))
    brown -= np.convolve(brown, np.ones(401) / 401, mode="same")  # remove the drift
    noise = white / white.std() + 0.7 * brown / (brown.std() + 1e-12)
    noise *= np.sqrt(power / 10 ** (snr_db / 10) / np.mean(noise**2))
    return speech + noise


# -- one speaker ----------------------------------------------------------------------------------
def _utterance_ids(rng: random.Random, count: int) -> list[str]:
    ids: set[str] = set()
    ordered = []
    while len(ordered) < count:
        name = f"SI{rng.randint(500, 2299)}" if len(ordered) % 3 == 2 else f"SX{rng.randint(3, 449)}"
        if name not in ids:
            ids.add(name)
            ordered.append(name)
    return ordered


def synthesize_speaker(args: tuple[SpeakerSpec, int, int, tuple[float, float], str]) -> list[dict]:
    """Writes every utterance of one speaker; returns per-utterance statistics."""
    from mohaq.datamodules.espeak import Espeak

    speaker, utterances, seed, snr_db, out = args
    engine = Espeak.instance()
    folder = Path(out) / speaker.part / speaker.dialect / speaker.speaker_id
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(f"{seed}/{speaker.index}")
    stats = []
    for number, utterance_id in enumerate(_utterance_ids(rng, utterances)):
        noise_rng = np.random.default_rng([seed, speaker.index, number])
        sentence = generate_sentence(random.Random(f"{seed}/{speaker.index}/{number}"))
        synthesis = engine.synthesize(
            sentence, voice=speaker.voice, rate=speaker.rate + int(noise_rng.integers(-10, 11)),
            pitch=speaker.pitch, pitch_range=speaker.pitch_range,
            seed=seed * 1_000_003 + speaker.index * 1009 + number,
        )  # fmt: skip
        ratio = SAMPLE_RATE / synthesis.sample_rate
        speech = resample(synthesis.samples / 32768.0, synthesis.sample_rate, SAMPLE_RATE)
        lead = int(noise_rng.integers(int(0.08 * SAMPLE_RATE), int(0.25 * SAMPLE_RATE)))
        tail = int(noise_rng.integers(int(0.08 * SAMPLE_RATE), int(0.25 * SAMPLE_RATE)))
        audio = np.concatenate([np.zeros(lead), speech, np.zeros(tail)])
        events = [(lead + int(round(s * ratio)), m) for s, m in synthesis.phonemes]
        speech_end = lead + len(speech)
        last_pause = [s for s, m in events if m in PAUSES and s > lead]
        segments = phone_segments(events, min(speech_end, max(last_pause, default=speech_end)),
                                  len(audio), lead)  # fmt: skip
        audio = add_noise(audio, float(noise_rng.uniform(*snr_db)), noise_rng)
        audio *= 0.5 / max(np.abs(audio).max(), 1e-9)
        stem = folder / utterance_id
        sf.write(f"{stem}.WAV", audio, SAMPLE_RATE, format="NIST", subtype="PCM_16")
        (folder / f"{utterance_id}.PHN").write_text(
            "".join(f"{start} {end} {phone}\n" for start, end, phone in segments)
        )
        (folder / f"{utterance_id}.WRD").write_text(_word_lines(synthesis, sentence, lead, ratio, segments))
        (folder / f"{utterance_id}.TXT").write_text(f"0 {len(audio)} {sentence}\n")
        stats.append({"samples": len(audio)})
    return stats


def _word_lines(synthesis, sentence: str, lead: int, ratio: float, segments) -> str:  # type: ignore[no-untyped-def]
    """``start end word`` lines from espeak's word events (ends at the next word's start)."""
    words = []
    for sample, position, length in synthesis.words:
        text = sentence[position - 1 : position - 1 + length].strip(" ,.?").lower()
        if text:
            words.append((lead + int(round(sample * ratio)), text))
    speech_end = max((end for _, end, phone in segments if phone != "h#"), default=0)
    lines = []
    for index, (start, word) in enumerate(words):
        end = words[index + 1][0] if index + 1 < len(words) else speech_end
        if end > start:
            lines.append(f"{start} {end} {word}\n")
    return "".join(lines)


# -- processes ------------------------------------------------------------------------------------
def _pool_main() -> None:
    """Runs speaker jobs read from stdin as JSON; writes their statistics to stdout."""
    request = json.load(sys.stdin)
    jobs = [
        (SpeakerSpec(**spec), request["utterances"], request["seed"], tuple(request["snr_db"]),
         request["out"])
        for spec in request["speakers"]
    ]  # fmt: skip
    # libespeak-ng's timing depends on what the process synthesized before (the
    # same text twice in a row differs by a few samples), so each speaker is
    # made in a fresh process: the output is then the same for any worker count.
    with multiprocessing.get_context("spawn").Pool(request["processes"], maxtasksperchild=1) as pool:
        results = pool.map(synthesize_speaker, jobs, chunksize=1)
    json.dump(results, sys.stdout)


def _run_in_fresh_interpreter(jobs: list, processes: int) -> list[list[dict]]:
    # The pool runs in a new interpreter started with `-c`: spawned workers
    # re-import the parent's __main__, and under `mohaq fit` that would load
    # torch and Lightning into every one-speaker process.
    request = {
        "speakers": [asdict(spec) for spec, *_ in jobs], "utterances": jobs[0][1],
        "seed": jobs[0][2], "snr_db": list(jobs[0][3]), "out": jobs[0][4], "processes": processes,
    }  # fmt: skip
    completed = subprocess.run(
        [sys.executable, "-c", "from mohaq.datamodules.synth_timit import _pool_main; _pool_main()"],
        input=json.dumps(request), capture_output=True, text=True, check=False,
    )  # fmt: skip
    if completed.returncode != 0:
        raise SynthesisError(f"speech synthesis failed:\n{completed.stderr[-4000:]}")
    return json.loads(completed.stdout)


# -- corpus ---------------------------------------------------------------------------------------
def speaker_specs(speakers: int, seed: int, test_speaker_fraction: float) -> list[SpeakerSpec]:
    """Deterministic speakers: ids, TRAIN/TEST part, dialect region, voice."""
    rng = random.Random(f"speakers/{seed}")
    test_count = max(2, int(round(test_speaker_fraction * speakers)))
    ids: set[str] = set()
    specs = []
    for index in range(speakers):
        female = rng.random() < 0.4
        while True:
            letters = "".join(rng.choice("ABCDEFGHIJKLMNOPRSTW") for _ in range(3))
            speaker_id = f"{'F' if female else 'M'}{letters}{rng.randint(0, 1)}"
            if speaker_id not in ids:
                ids.add(speaker_id)
                break
        variant = rng.choice(FEMALE_VARIANTS if female else MALE_VARIANTS)
        specs.append(SpeakerSpec(
            speaker_id=speaker_id,
            part="TEST" if index >= speakers - test_count else "TRAIN",
            dialect=f"DR{index % 8 + 1}",
            voice=f"en-us+{variant}",
            pitch=rng.randint(55, 85) if female else rng.randint(25, 55),
            pitch_range=rng.randint(30, 80),
            rate=rng.randint(145, 195),
            index=index,
        ))  # fmt: skip
    return specs


def _parameters(speakers: int, utterances: int, seed: int, snr_db: tuple[float, float],
                test_speaker_fraction: float) -> dict:  # fmt: skip
    return {
        "format": FORMAT_VERSION, "speakers": speakers, "utterances_per_speaker": utterances,
        "seed": seed, "snr_db": list(snr_db), "test_speaker_fraction": test_speaker_fraction,
    }  # fmt: skip


def _validate(speakers: int, utterances: int, snr_db: tuple[float, float], fraction: float,
              workers: int) -> None:  # fmt: skip
    if speakers < 3:
        raise SynthesisError(f"speakers must be >= 3 (1 train + 2 test), got {speakers}")
    if utterances < 1:
        raise SynthesisError(f"utterances_per_speaker must be >= 1, got {utterances}")
    if len(snr_db) != 2 or snr_db[0] > snr_db[1]:
        raise SynthesisError(f"snr_db must be (low, high) with low <= high, got {snr_db}")
    if not 0.0 < fraction < 1.0:
        raise SynthesisError(f"test_speaker_fraction must be in (0, 1), got {fraction}")
    if workers < 0:
        raise SynthesisError(f"workers must be >= 0 (0: one per core), got {workers}")


def generate_corpus(
    out_dir: str | Path,
    *,
    speakers: int,
    utterances_per_speaker: int,
    seed: int,
    snr_db: tuple[float, float] = (5.0, 20.0),
    test_speaker_fraction: float = 0.3,
    workers: int = 0,
) -> CorpusSummary:
    """Generates the corpus into ``out_dir`` (a no-op if it already holds the same one).

    Raises:
        SynthesisError: on bad arguments, or if ``out_dir`` is not empty and holds
            no corpus made by this generator (user files are never deleted).
    """
    snr_db = (float(snr_db[0]), float(snr_db[1]))
    _validate(speakers, utterances_per_speaker, snr_db, test_speaker_fraction, workers)
    out = Path(out_dir)
    parameters = _parameters(speakers, utterances_per_speaker, seed, snr_db, test_speaker_fraction)
    manifest_path = out / MANIFEST
    if manifest_path.is_file():
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("parameters") == parameters:
            return CorpusSummary(**manifest["summary"])
        for part in ("TRAIN", "TEST"):  # our own corpus with other parameters
            shutil.rmtree(out / part, ignore_errors=True)
        manifest_path.unlink()
    elif out.exists() and any(out.iterdir()):
        raise SynthesisError(
            f"{str(out)!r} is not empty and holds no {MANIFEST}: choose an empty or new folder"
        )
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    specs = speaker_specs(speakers, seed, test_speaker_fraction)
    jobs = [(spec, utterances_per_speaker, seed, snr_db, str(out)) for spec in specs]
    processes = min(workers or os.cpu_count() or 1, len(jobs))
    results = _run_in_fresh_interpreter(jobs, processes)
    samples = [item["samples"] for result in results for item in result]
    summary = CorpusSummary(
        train_speakers=sum(spec.part == "TRAIN" for spec in specs),
        test_speakers=sum(spec.part == "TEST" for spec in specs),
        utterances=len(samples),
        audio_seconds=round(sum(samples) / SAMPLE_RATE, 3),
        frames=sum(1 + (n - 400) // 160 for n in samples if n >= 400),
        seconds_taken=round(time.perf_counter() - started, 3),
    )
    payload = json.dumps({"parameters": parameters, "summary": asdict(summary)}, indent=2)
    with tempfile.NamedTemporaryFile("w", dir=out, delete=False, suffix=".tmp") as handle:
        handle.write(payload)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(handle.name, manifest_path)
    return summary


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``mohaq-synth-timit``."""
    parser = argparse.ArgumentParser(
        prog="mohaq-synth-timit",
        description="Generate a synthetic TIMIT-format corpus (LDC layout) with libespeak-ng.",
    )
    parser.add_argument("--out", required=True, help="output folder (new or empty)")
    parser.add_argument("--speakers", type=int, default=40, help="number of speakers (>= 3)")
    parser.add_argument("--utterances-per-speaker", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--snr-db", type=float, nargs=2, default=(5.0, 20.0), metavar=("LOW", "HIGH"))
    parser.add_argument("--test-speaker-fraction", type=float, default=0.3)
    parser.add_argument("--workers", type=int, default=0, help="processes (0: one per core)")
    args = parser.parse_args(argv)
    try:
        summary = generate_corpus(
            args.out, speakers=args.speakers, utterances_per_speaker=args.utterances_per_speaker,
            seed=args.seed, snr_db=tuple(args.snr_db), test_speaker_fraction=args.test_speaker_fraction,
            workers=args.workers,
        )  # fmt: skip
    except SynthesisError as error:
        parser.error(str(error).replace("speakers must", "--speakers must").replace(
            "utterances_per_speaker must", "--utterances-per-speaker must"))  # fmt: skip
    print(
        f"{summary.utterances} utterances ({summary.train_speakers} train + "
        f"{summary.test_speakers} test speakers), {summary.audio_hours:.3f} h of audio, "
        f"{summary.frames} frames at 10 ms; generated in {summary.seconds_taken:.1f} s -> {args.out}"
    )
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
