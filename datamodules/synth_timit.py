"""The synthetic TIMIT-format corpus: speech from libespeak-ng in the exact LDC layout.

For users without the LDC corpus (and for every test and the quickstart), this
writes ``OUT/TRAIN|TEST/DR<n>/<SPEAKER>/<UTT>.WAV`` (NIST SPHERE, 16 kHz,
16-bit PCM) with ``.PHN`` (sample-exact phone boundaries in TIMIT's 61
symbols, from espeak's phoneme events; stops as closure + release), ``.WRD``
and ``.TXT``. Speakers differ by voice variant (m1..m7, klatt..klatt4, f1..f5),
pitch, pitch range and rate; sentences come from a grammar over a ~300-word
vocabulary; white, brown and babble noise (other synthesized voices) at a
random SNR per utterance keeps the task from being trivial. The output depends
only on the arguments, not on the number of worker processes: each speaker is
made in a fresh process, since espeak's audio depends on what the process
synthesized before.

``corpus.json`` records the SHA-256 of every file. Generating into a folder
that already holds the same corpus verifies them (:func:`verify_corpus`), and
the speakers of damaged or missing files are generated again (a warning names
the files); so does ``TIMITDataModule`` before it computes features.

Command line::

    mohaq-synth-timit --out DIR --speakers N --utterances-per-speaker K --seed S
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import multiprocessing
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import soundfile as sf

from mohaq.console import progress_bar, show_progress_lines
from mohaq.datamodules.checksums import checksums, mismatches
from mohaq.datamodules.phones import PHONES_61
from mohaq.datamodules.sentences import generate_sentence

if TYPE_CHECKING:
    from mohaq.datamodules.espeak import Espeak

log = logging.getLogger(__name__)

SAMPLE_RATE = 16_000
#: What the synthesis pool prints per finished speaker (read for the progress bar).
_SPEAKER_DONE = "mohaq-synth: speaker done"
MANIFEST = "corpus.json"
# Written before the first utterance: marks a folder as this generator's even
# when a run was killed, so the next run may replace it.
PARTIAL_MANIFEST = "corpus.partial.json"
FORMAT_VERSION = 2
# The klatt variants declare no gender: espeak gives them its default (male) voice.
MALE_VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "klatt", "klatt2", "klatt3", "klatt4")
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


_FRAME = 80  # 5 ms at 16 kHz: the step of the closure search
_MAX_CLOSURE = 1600  # 100 ms


def _silent_tail(audio: np.ndarray, segment_start: int, boundary: int, threshold: float) -> int:
    """Length of the near-silent stretch that ends at ``boundary`` (a stop's closure).

    espeak places a stop's phoneme event at its burst; the closure silence is
    the end of the previous segment. The search keeps at least a fifth of that
    segment for its own phone.
    """
    limit = min(_MAX_CLOSURE, int(0.8 * (boundary - segment_start)))
    length = 0
    while length + _FRAME <= limit:
        frame = audio[boundary - length - _FRAME : boundary - length]
        if np.sqrt(np.mean(frame**2)) >= threshold:
            break
        length += _FRAME
    return length if length >= 2 * _FRAME else 0


def phone_segments(
    events: list[tuple[int, str]],
    speech_end: int,
    total: int,
    lead: int,
    audio: np.ndarray | None = None,
) -> list[tuple[int, int, str]]:
    """Contiguous TIMIT segments covering ``[0, total)`` from espeak phoneme events.

    Stops and affricates become closure + release: the closure is the silent
    end of the previous segment where the clean ``audio`` shows one, else the
    first part of the stop's own segment (a fixed share).

    Args:
        events: (sample, mnemonic) at the output rate, offset by ``lead``.
        speech_end: sample where the last phone ends (trailing silence after it).
        total: number of samples.
        lead: leading silence before the first event.
        audio: the clean (noise-free) audio at the output rate, for closures.

    Raises:
        SynthesisError: for an espeak mnemonic without a TIMIT mapping.
    """
    del lead  # the events already carry it
    marks = sorted(((s, m) for s, m in events if m not in MODIFIERS), key=lambda item: item[0])
    raw: list[tuple[int, int, str]] = []
    for position, (start, mnemonic) in enumerate(marks):
        end = marks[position + 1][0] if position + 1 < len(marks) else speech_end
        end = min(end, speech_end)
        if end > start:
            raw.append((start, end, mnemonic))
    threshold = 0.0
    if audio is not None and audio.size >= _FRAME:
        frames = audio[: audio.size // _FRAME * _FRAME].reshape(-1, _FRAME)
        threshold = 0.03 * float(np.percentile(np.sqrt(np.mean(frames**2, axis=1)), 95))
    segments: list[list] = [[0, raw[0][0] if raw else total, "h#"]]
    for index, (start, end, mnemonic) in enumerate(raw):
        if mnemonic in PAUSES:
            edge = index == 0 or index == len(raw) - 1
            segments.append([start, end, "h#" if edge else "pau"])
            continue
        parts = map_mnemonic(mnemonic)
        if len(parts) == 2 and parts[0][0].endswith("cl") and threshold > 0:
            previous = segments[-1]
            closure = _silent_tail(audio, previous[0], start, threshold)
            if closure:
                previous[1] = start - closure
                segments.append([start - closure, start, parts[0][0]])
                segments.append([start, end, parts[1][0]])
                continue
        cursor = start
        for number, (phone, share) in enumerate(parts):
            stop = end if number == len(parts) - 1 else cursor + int(round(share * (end - start)))
            segments.append([cursor, stop, phone])
            cursor = stop
    segments.append([segments[-1][1], total, "h#"])
    merged: list[tuple[int, int, str]] = []
    for start, end, phone in segments:
        if end <= start:
            continue
        if merged and merged[-1][2] == phone and phone in ("h#", "pau"):
            merged[-1] = (merged[-1][0], end, phone)
        else:
            merged.append((start, end, phone))
    return merged


def word_segments(
    words: list[tuple[int, str]], segments: list[tuple[int, int, str]]
) -> list[tuple[int, int, str]]:
    """``(start, end, word)``: each word runs to the next one's start or to the pause before it."""
    silences = [start for start, _, phone in segments if phone in ("h#", "pau") and start > 0]
    speech_end = max((end for _, end, phone in segments if phone != "h#"), default=0)
    # espeak's word events fall near, not on, phone boundaries: snap to the nearest one.
    boundaries = np.array([start for start, _, phone in segments if phone not in ("h#", "pau")])
    if boundaries.size:
        snapped: list[tuple[int, str]] = []
        for start, word in words:
            nearest = int(boundaries[np.abs(boundaries - start).argmin()])
            if snapped and nearest <= snapped[-1][0]:  # two words on one boundary: keep espeak's
                nearest = max(start, snapped[-1][0] + 1)
            snapped.append((nearest, word))
        words = snapped
    aligned = []
    for index, (start, word) in enumerate(words):
        end = words[index + 1][0] if index + 1 < len(words) else speech_end
        end = min([end] + [s for s in silences if start < s < end])
        if end > start:
            aligned.append((start, end, word))
    return aligned


# -- audio ----------------------------------------------------------------------------------------
@lru_cache(maxsize=4)
def _filter_bank(up: int, down: int, half_width: int) -> np.ndarray:
    """Kaiser-windowed sinc low-pass, one row of ``2 * half_width`` taps per output phase."""
    cutoff = 0.94 * 0.5 * min(1.0, up / down)  # cycles per input sample, below both Nyquists
    offset = np.arange(-half_width + 1, half_width + 1)[None, :] - np.arange(up)[:, None] / up
    window = np.i0(8.0 * np.sqrt(np.clip(1 - (offset / half_width) ** 2, 0, None))) / np.i0(8.0)
    bank = 2 * cutoff * np.sinc(2 * cutoff * offset) * window
    return bank / bank.sum(axis=1, keepdims=True)  # unit gain at DC for every phase


def resample(
    samples: np.ndarray, source_rate: int, target_rate: int, half_width: int = 16
) -> np.ndarray:
    """Polyphase windowed-sinc resampling (22050 -> 16000 Hz: 320 phases of 32 taps)."""
    divisor = math.gcd(source_rate, target_rate)
    up, down = target_rate // divisor, source_rate // divisor
    count = int(round(len(samples) * target_rate / source_rate))
    bank = _filter_bank(up, down, half_width)
    position = np.arange(count, dtype=np.int64) * down
    base, phase = position // up, position % up
    padded = np.concatenate(
        [np.zeros(half_width), np.asarray(samples, np.float64), np.zeros(half_width + 1)]
    )
    index = base[:, None] + np.arange(1, 2 * half_width + 1)[None, :]
    return np.einsum("ij,ij->i", padded[index], bank[phase])


def _unit(signal: np.ndarray) -> np.ndarray:
    return signal / (np.sqrt(np.mean(signal**2)) + 1e-12)


def add_noise(
    speech: np.ndarray,
    snr_db: float,
    rng: np.random.Generator,
    babble: np.ndarray | None = None,
) -> np.ndarray:
    """Adds white, low-frequency (brown) and babble noise at ``snr_db`` to the active speech.

    Args:
        babble: other synthesized speech; three random stretches of it are mixed
            in as competing talkers.
    """
    active = speech[np.abs(speech) > 0.02 * np.abs(speech).max()] if speech.any() else speech
    power = float(np.mean(active**2)) if active.size else 1e-6
    count = len(speech)
    white = rng.standard_normal(count)
    brown = np.cumsum(rng.standard_normal(count + 400))
    running = np.cumsum(np.concatenate([[0.0], brown]))
    brown = brown[200:-200] - (running[401:] - running[:-401]) / 401  # remove the drift
    noise = _unit(white) * rng.uniform(0.5, 1.0) + _unit(brown) * rng.uniform(0.3, 0.8)
    if babble is not None and babble.size:
        talkers = sum(
            np.take(babble, np.arange(count) + int(rng.integers(babble.size)), mode="wrap")
            for _ in range(3)
        )
        noise = noise + _unit(talkers) * rng.uniform(0.5, 1.5)
    noise *= np.sqrt(power / 10 ** (snr_db / 10) / np.mean(noise**2))
    return speech + noise


# -- one speaker ----------------------------------------------------------------------------------
def _utterance_ids(rng: random.Random, count: int) -> list[str]:
    ids: set[str] = set()
    ordered = []
    while len(ordered) < count:
        name = (
            f"SI{rng.randint(500, 2299)}" if len(ordered) % 3 == 2 else f"SX{rng.randint(3, 449)}"
        )
        if name not in ids:
            ids.add(name)
            ordered.append(name)
    return ordered


def _babble_source(engine: Espeak, speaker: SpeakerSpec, seed: int) -> np.ndarray:
    """A few sentences by other voices, at 16 kHz: the competing talkers of this speaker's noise."""
    rng = random.Random(f"{seed}/{speaker.index}/babble")
    voices = [
        f"en-us+{v}" for v in MALE_VARIANTS + FEMALE_VARIANTS if not speaker.voice.endswith(f"+{v}")
    ]
    pieces = []
    for number in range(3):
        synthesis = engine.synthesize(
            generate_sentence(rng), voice=rng.choice(voices), rate=rng.randint(150, 200),
            pitch=rng.randint(20, 90), pitch_range=rng.randint(30, 80), seed=seed + number,
        )  # fmt: skip
        pieces.append(resample(synthesis.samples / 32768.0, synthesis.sample_rate, SAMPLE_RATE))
    return np.concatenate(pieces)


def _write_atomically(path: Path, write: Callable[[str], None]) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    write(str(temporary))
    os.replace(temporary, path)


def synthesize_speaker(args: tuple[SpeakerSpec, int, int, tuple[float, float], str]) -> list[dict]:
    """Writes every utterance of one speaker; returns per-utterance statistics.

    Each file is written aside and renamed; the ``.WAV`` comes last, so a
    ``.WAV`` on disk means its utterance is complete.
    """
    from mohaq.datamodules.espeak import Espeak

    speaker, utterances, seed, snr_db, out = args
    engine = Espeak.instance()
    folder = Path(out) / speaker.part / speaker.dialect / speaker.speaker_id
    folder.mkdir(parents=True, exist_ok=True)
    babble = _babble_source(engine, speaker, seed)
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
        clean = np.concatenate([np.zeros(lead), speech, np.zeros(tail)])
        events = [(lead + int(round(s * ratio)), m) for s, m in synthesis.phonemes]
        speech_end = lead + len(speech)
        last_pause = [s for s, m in events if m in PAUSES and s > lead]
        segments = phone_segments(
            events, min(speech_end, max(last_pause, default=speech_end)), len(clean), lead, clean
        )
        audio = add_noise(clean, float(noise_rng.uniform(*snr_db)), noise_rng, babble)
        audio *= 0.5 / max(np.abs(audio).max(), 1e-9)
        words = []
        for sample, position, length in synthesis.words:
            text = sentence[position - 1 : position - 1 + length].strip(" ,.?").lower()
            if text:
                words.append((lead + int(round(sample * ratio)), text))
        stem = folder / utterance_id
        texts = {
            ".PHN": "".join(f"{start} {end} {phone}\n" for start, end, phone in segments),
            ".WRD": "".join(f"{a} {b} {w}\n" for a, b, w in word_segments(words, segments)),
            ".TXT": f"0 {len(audio)} {sentence}\n",
        }
        for suffix, text in texts.items():
            _write_atomically(
                stem.with_suffix(suffix), lambda path, text=text: Path(path).write_text(text)
            )
        _write_atomically(
            stem.with_suffix(".WAV"),
            lambda path, audio=audio: sf.write(
                path, audio, SAMPLE_RATE, format="NIST", subtype="PCM_16"
            ),
        )
        stats.append({"samples": len(audio)})
    return stats


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
    # fork where the platform has it: a forked child costs milliseconds, a
    # spawned one re-imports numpy and soundfile. This interpreter never
    # initialises espeak, so every child starts from espeak's initial state.
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    results = []
    with multiprocessing.get_context(method).Pool(request["processes"], maxtasksperchild=1) as pool:
        for result in pool.imap(synthesize_speaker, jobs, chunksize=1):
            results.append(result)
            print(_SPEAKER_DONE, flush=True)  # the parent's progress bar counts these
    # A file, not stdout: nothing a library prints can corrupt the result.
    Path(request["result"]).write_text(json.dumps(results))


def _run_in_fresh_interpreter(jobs: list, processes: int) -> list[list[dict]]:
    # The pool runs in a new interpreter started with `-c`: forking the caller
    # (under `mohaq fit`, a process with torch's threads) is unsafe, and
    # spawned workers would re-import its __main__, torch and Lightning.
    handle, name = tempfile.mkstemp(prefix="mohaq-synth-", suffix=".json")
    os.close(handle)
    result = Path(name)
    request = {
        "speakers": [asdict(spec) for spec, *_ in jobs], "utterances": jobs[0][1],
        "seed": jobs[0][2], "snr_db": list(jobs[0][3]), "out": jobs[0][4], "processes": processes,
        "result": str(result),
    }  # fmt: skip
    command = [sys.executable, "-c",
               "from mohaq.datamodules.synth_timit import _pool_main; _pool_main()"]  # fmt: skip
    bar = progress_bar(len(jobs), description="synthesizing speakers", unit="speaker")
    try:
        with tempfile.TemporaryFile(mode="w+") as errors:
            process = subprocess.Popen(
                command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errors, text=True
            )
            assert process.stdin is not None and process.stdout is not None
            process.stdin.write(json.dumps(request))
            process.stdin.close()
            for line in process.stdout:
                if line.strip() == _SPEAKER_DONE:
                    bar.update(1)
            returncode = process.wait()
            if returncode != 0:
                errors.seek(0)
                raise SynthesisError(f"speech synthesis failed:\n{errors.read()[-4000:]}")
        return json.loads(result.read_text())
    finally:
        bar.close()
        result.unlink(missing_ok=True)


# -- corpus ---------------------------------------------------------------------------------------
def speaker_specs(speakers: int, seed: int, test_speaker_fraction: float) -> list[SpeakerSpec]:
    """Deterministic speakers: ids, TRAIN/TEST part, dialect region, voice."""
    rng = random.Random(f"speakers/{seed}")
    test_count = min(speakers - 1, max(2, int(round(test_speaker_fraction * speakers))))
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
    if len(snr_db) != 2 or snr_db[0] > snr_db[1] or not all(map(math.isfinite, snr_db)):
        raise SynthesisError(f"snr_db must be (low, high) with low <= high, got {snr_db}")
    if not 0.0 < fraction < 1.0:
        raise SynthesisError(f"test_speaker_fraction must be in (0, 1), got {fraction}")
    if workers < 0:
        raise SynthesisError(f"workers must be >= 0 (0: one per core), got {workers}")


def _wav_count(out: Path) -> int:
    return sum(1 for _ in out.glob("*/DR*/*/*.WAV"))


def _corpus_files(out: Path) -> list[Path]:
    """Every file the generator wrote (temporary files start with a dot)."""
    return [p for p in sorted(out.glob("*/DR*/*/*.*")) if not p.name.startswith(".")]


def _speaker_of(name: str) -> tuple[str, ...]:
    """``TRAIN/DR1/MABC0/SI1.WAV`` -> ``("TRAIN", "DR1", "MABC0")``."""
    return tuple(name.split("/")[:3])


def _read_manifest(path: Path) -> dict:
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise SynthesisError(
            f"{path} is damaged ({error}); delete its folder and generate the corpus again"
        ) from error
    if not isinstance(manifest, dict):
        raise SynthesisError(f"{path} is damaged; delete its folder and generate the corpus again")
    return manifest


def verify_corpus(out_dir: str | Path, *, workers: int = 0) -> list[str]:
    """Checks a generated corpus against the checksums in its ``corpus.json``.

    The speakers of damaged or missing files are generated again (the output
    depends only on the parameters, so they come back byte for byte; if they do
    not, e.g. with another espeak build, the manifest records the new
    checksums and says so). A corpus made before checksums existed gets them
    recorded now, as it is.

    Args:
        out_dir: the corpus folder.
        workers: processes for the regeneration (0: one per core).

    Returns:
        The relative paths that were damaged or missing ([] when intact).

    Raises:
        SynthesisError: if ``corpus.json`` is missing or damaged, or synthesis fails.
    """
    out = Path(out_dir)
    manifest_path = out / MANIFEST
    manifest = _read_manifest(manifest_path)
    recorded = manifest.get("checksums")
    if recorded is None:
        manifest["checksums"] = checksums(out, _corpus_files(out))
        _write_json(manifest_path, manifest)
        log.info(
            "synthetic corpus %s: checksums of %d files recorded", out, len(manifest["checksums"])
        )
        return []
    damaged = mismatches(out, recorded)
    if not damaged:
        return []
    speakers = sorted({_speaker_of(name) for name in damaged})
    log.warning(
        "synthetic corpus %s: %d file(s) are damaged or missing (%s%s); generating speaker(s) %s "
        "again",
        out,
        len(damaged),
        ", ".join(damaged[:3]),
        ", ..." if len(damaged) > 3 else "",
        ", ".join("/".join(s) for s in speakers),
    )
    parameters = manifest["parameters"]
    specs = speaker_specs(
        parameters["speakers"], parameters["seed"], parameters["test_speaker_fraction"]
    )
    snr_db = tuple(parameters["snr_db"])
    jobs = [
        (spec, parameters["utterances_per_speaker"], parameters["seed"], snr_db, str(out))
        for spec in specs
        if (spec.part, spec.dialect, spec.speaker_id) in speakers
    ]
    if jobs:
        _run_in_fresh_interpreter(jobs, min(workers or os.cpu_count() or 1, len(jobs)))
    names = [name for name in recorded if _speaker_of(name) in speakers]
    fresh = checksums(out, [out / name for name in names if (out / name).is_file()])
    differ = sorted(name for name in names if fresh.get(name) != recorded[name])
    if differ:
        log.warning(
            "synthetic corpus %s: %d regenerated file(s) differ from their recorded checksums "
            "(another espeak build?); the manifest now records the new ones",
            out,
            len(differ),
        )
        recorded.update(fresh)
        _write_json(manifest_path, manifest)
    else:
        log.warning(
            "synthetic corpus %s: repaired; the regenerated files match their checksums", out
        )
    return damaged


def _write_json(path: Path, payload: dict) -> None:
    """Writes ``payload`` through a temporary file and an atomic rename."""
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as handle:
        json.dump(payload, handle, indent=2)
        handle.flush()
        os.fsync(handle.fileno())
    os.chmod(handle.name, 0o644)  # NamedTemporaryFile makes it private
    os.replace(handle.name, path)


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
    if out.exists() and not out.is_dir():
        raise SynthesisError(
            f"{str(out)!r} is a file, not a folder: choose a new or empty folder (or one that "
            "holds an earlier corpus) as the output"
        )
    try:
        return _generate(out, speakers, utterances_per_speaker, seed, snr_db,
                         test_speaker_fraction, workers)  # fmt: skip
    except OSError as error:
        raise SynthesisError(
            f"cannot write the corpus into {str(out)!r}: {error.strerror or error} (errno "
            f"{error.errno}); choose a writable folder with room for it"
        ) from error


def _generate(
    out: Path,
    speakers: int,
    utterances_per_speaker: int,
    seed: int,
    snr_db: tuple[float, float],
    test_speaker_fraction: float,
    workers: int,
) -> CorpusSummary:
    parameters = _parameters(speakers, utterances_per_speaker, seed, snr_db, test_speaker_fraction)
    manifest_path, partial_path = out / MANIFEST, out / PARTIAL_MANIFEST
    if manifest_path.is_file():
        try:
            manifest = _read_manifest(manifest_path)
        except SynthesisError:
            manifest = {}  # our own manifest, damaged: the corpus is generated again
        if manifest.get("parameters") == parameters and "checksums" in manifest:
            verify_corpus(out, workers=workers)
            return CorpusSummary(**manifest["summary"])
        if manifest.get("parameters") == parameters and _wav_count(out) == manifest.get(
            "summary", {}
        ).get("utterances"):
            verify_corpus(out, workers=workers)  # made before checksums: records them
            return CorpusSummary(**manifest["summary"])
    if manifest_path.is_file() or partial_path.is_file():
        # Our own corpus, with other parameters or left incomplete: replaced.
        for part in ("TRAIN", "TEST"):
            shutil.rmtree(out / part, ignore_errors=True)
        manifest_path.unlink(missing_ok=True)
    elif out.exists() and any(out.iterdir()):
        raise SynthesisError(
            f"{str(out)!r} is not empty and holds no {MANIFEST}: choose an empty or new folder"
        )
    out.mkdir(parents=True, exist_ok=True)
    _write_json(partial_path, {"parameters": parameters})
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
    files = checksums(out, _corpus_files(out))
    _write_json(
        manifest_path, {"parameters": parameters, "summary": asdict(summary), "checksums": files}
    )
    partial_path.unlink()
    return summary


def _int_at_least(low: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value

    parse.__name__ = f"integer >= {low}"
    return parse


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``mohaq-synth-timit``.

    Returns:
        0, or the exit status of the error that stopped it (see
        :mod:`mohaq.cli_errors`; argument errors exit with status 2 by themselves).
    """
    from mohaq.cli_errors import DEBUG_ENV, DEBUG_FLAG, run_command, split_debug_flag

    debug, argv = split_debug_flag(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="mohaq-synth-timit",
        description="Generate a synthetic TIMIT-format corpus (LDC layout) with libespeak-ng.",
        epilog=f"{DEBUG_FLAG} (or {DEBUG_ENV}=1) shows the traceback of an error.",
    )
    parser.add_argument(
        "--out", required=True, help="output folder (new, empty, or an earlier corpus)"
    )
    parser.add_argument(
        "--speakers",
        type=_int_at_least(3),
        required=True,
        help="number of speakers (>= 3: at least 1 train and 2 test)",
    )
    parser.add_argument("--utterances-per-speaker", type=_int_at_least(1), required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument(
        "--snr-db",
        type=float,
        nargs=2,
        default=(5.0, 20.0),
        metavar=("LOW", "HIGH"),
        help="range of the per-utterance signal-to-noise ratio in dB",
    )
    parser.add_argument("--test-speaker-fraction", type=float, default=0.3)
    parser.add_argument(
        "--workers", type=_int_at_least(0), default=0, help="processes (0: one per core)"
    )
    args = parser.parse_args(argv)
    if args.snr_db[0] > args.snr_db[1] or not all(map(math.isfinite, args.snr_db)):
        parser.error(f"argument --snr-db: LOW must be <= HIGH (both finite), got {args.snr_db}")
    if not 0.0 < args.test_speaker_fraction < 1.0:
        parser.error(
            f"argument --test-speaker-fraction: must be in (0, 1), got {args.test_speaker_fraction}"
        )

    def generate(_: list[str]) -> None:
        summary = generate_corpus(
            args.out, speakers=args.speakers, utterances_per_speaker=args.utterances_per_speaker,
            seed=args.seed, snr_db=tuple(args.snr_db), test_speaker_fraction=args.test_speaker_fraction,
            workers=args.workers,
        )  # fmt: skip
        print(
            f"{summary.utterances} utterances ({summary.train_speakers} train + "
            f"{summary.test_speakers} test speakers), {summary.audio_hours:.3f} h of audio, "
            f"{summary.frames} frames at 10 ms hop; took {summary.seconds_taken:.1f} s -> {args.out}"
        )

    # A typed error (SynthesisError, EspeakError, ...) is one line and its exit status.
    show_progress_lines()
    return run_command(generate, [DEBUG_FLAG] if debug else [], "mohaq-synth-timit")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())  # python -m: cli_errors maps __main__'s classes to this module's names
