"""Finds and reads the utterances of a TIMIT tree in the LDC layout.

Layout: ``<root>/{TRAIN,TEST}/DR<n>/<SPEAKER>/<UTT>.{WAV,PHN,WRD,TXT}``, names in
upper or lower case (both exist in the wild), optionally under one wrapper
folder (``<root>/TIMIT/TRAIN`` or ``<root>/data/TRAIN``). Audio is NIST SPHERE
``<UTT>.WAV``, or the RIFF copy ``<UTT>.WAV.wav`` that many redistributions add.
When both exist the RIFF copy is used: it holds the same samples, and it is the
one libsndfile can always read, while some SPHERE distributions are
shorten-compressed, which libsndfile cannot decode.

Everything that can be wrong with a file raises :class:`CorpusError` naming the
file (and the line, for PHN files), so ``prepare_data`` can fail before any
long work starts.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import soundfile as sf

from mohaq.datamodules.phones import PHONES_61

SAMPLE_RATE = 16_000
PARTS: tuple[str, ...] = ("TRAIN", "TEST")
_EXPECTED_LAYOUT = (
    "expected a TIMIT tree in the LDC layout: TRAIN/ and TEST/ folders (any case), "
    "each with DR<n>/<SPEAKER>/ folders holding <UTT>.WAV (or <UTT>.WAV.wav) and <UTT>.PHN"
)
_DIALECT_RE = re.compile(r"^DR\d+$")
_PHONE_SET = frozenset(PHONES_61)


class CorpusError(ValueError):
    """A corpus file or folder is missing, unreadable or inconsistent."""


@dataclass(frozen=True)
class Utterance:
    """One utterance of the tree.

    Attributes:
        utterance_id: ``<SPEAKER>_<UTT>``, upper-case (SA1 etc. repeat across speakers).
        speaker: speaker folder name, upper-case (``FCJF0``).
        part: ``TRAIN`` or ``TEST``.
        dialect: dialect-region folder name, upper-case (``DR1``).
        audio_path: the audio file chosen (RIFF copy if present, else SPHERE).
        phn_path: the phone transcription, None when it is missing (an error at validation).
    """

    utterance_id: str
    speaker: str
    part: str
    dialect: str
    audio_path: Path
    phn_path: Path | None


class PhoneSegment(NamedTuple):
    """One PHN line: samples ``[start, end)`` carry ``phone`` (a 61-set symbol)."""

    start: int
    end: int
    phone: str


def _children_by_upper_name(folder: Path) -> dict[str, Path]:
    return {child.name.upper(): child for child in sorted(folder.iterdir())}


def find_timit_root(root: str | Path) -> Path:
    """Returns the folder that directly holds TRAIN/ and TEST/.

    Args:
        root: the corpus folder, or a folder with exactly one wrapper folder around it.

    Raises:
        CorpusError: if ``root`` is missing, empty, or no TRAIN/ and TEST/ are found.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise CorpusError(f"corpus folder {str(root)!r} does not exist; {_EXPECTED_LAYOUT}")
    candidates = [root] + [child for child in sorted(root.iterdir()) if child.is_dir()]
    for candidate in candidates:
        names = _children_by_upper_name(candidate)
        if all(part in names and names[part].is_dir() for part in PARTS):
            return candidate
    found = sorted(child.name for child in root.iterdir())
    what = "it is empty" if not found else f"it holds {found[:10]}"
    raise CorpusError(f"{str(root)!r} is not a TIMIT tree ({what}); {_EXPECTED_LAYOUT}")


def _speaker_utterances(part: str, dialect: Path, speaker: Path) -> list[Utterance]:
    # Group files by the utterance stem: SI1027.WAV, SI1027.WAV.wav, SI1027.PHN ...
    sphere: dict[str, Path] = {}
    riff: dict[str, Path] = {}
    phn: dict[str, Path] = {}
    for path in sorted(speaker.iterdir()):
        name = path.name.upper()
        if name.endswith(".WAV.WAV"):
            riff[name[: -len(".WAV.WAV")]] = path
        elif name.endswith(".WAV"):
            sphere[name[: -len(".WAV")]] = path
        elif name.endswith(".PHN"):
            phn[name[: -len(".PHN")]] = path
    speaker_id = speaker.name.upper()
    utterances = []
    for stem in sorted(set(sphere) | set(riff)):
        utterances.append(
            Utterance(
                utterance_id=f"{speaker_id}_{stem}",
                speaker=speaker_id,
                part=part,
                dialect=dialect.name.upper(),
                audio_path=riff.get(stem) or sphere[stem],
                phn_path=phn.get(stem),
            )
        )
    return utterances


def scan_corpus(root: str | Path, *, include_sa: bool = False) -> list[Utterance]:
    """Lists the utterances of a TIMIT tree (only file names are looked at).

    Args:
        root: the corpus folder (see :func:`find_timit_root`).
        include_sa: keep the two dialect sentences SA1/SA2 that every speaker
            reads; standard recipes drop them because they bias the phone model.

    Returns:
        Utterances sorted by part, dialect, speaker and name.

    Raises:
        CorpusError: if the tree is not a TIMIT tree, or a part holds no
            DR*/speaker folder with audio.
    """
    timit_root = find_timit_root(root)
    parts = _children_by_upper_name(timit_root)
    utterances: list[Utterance] = []
    for part in PARTS:
        part_dir = parts[part]
        found = []
        for dialect in sorted(part_dir.iterdir()):
            if not (dialect.is_dir() and _DIALECT_RE.match(dialect.name.upper())):
                continue
            for speaker in sorted(dialect.iterdir()):
                if speaker.is_dir():
                    found.extend(_speaker_utterances(part, dialect, speaker))
        if not found:
            raise CorpusError(f"{str(part_dir)!r} holds no utterance; {_EXPECTED_LAYOUT}")
        utterances.extend(found)
    if not include_sa:
        utterances = [u for u in utterances if not is_sa(u)]
    return utterances


def is_sa(utterance: Utterance) -> bool:
    """Whether it is one of the dialect sentences SA1/SA2 that every speaker reads."""
    return utterance.utterance_id.rsplit("_", 1)[-1].startswith("SA")


def _declared_frames(path: Path) -> int | None:
    """Frames the header promises (NIST ``sample_count``, RIFF ``data`` size), if readable.

    libsndfile silently returns fewer frames for a truncated file, so the
    header's own count is the only way to notice the truncation.
    """
    with path.open("rb") as handle:
        head = handle.read(1024)
        if head.startswith(b"NIST_1A"):
            fields = dict(re.findall(rb"^(\w+) -\w+ (\S+)", head, flags=re.MULTILINE))
            if b"sample_count" not in fields:
                return None
            return int(fields[b"sample_count"])
        if head.startswith(b"RIFF") and head[8:12] == b"WAVE":
            handle.seek(12)
            block_align = None
            while chunk := handle.read(8):
                if len(chunk) < 8:
                    return None
                chunk_id, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
                if chunk_id == b"fmt ":
                    block_align = struct.unpack("<H", handle.read(16)[12:14])[0]
                    handle.seek(size - 16 + (size & 1), 1)
                elif chunk_id == b"data":
                    return size // block_align if block_align else None
                else:
                    handle.seek(size + (size & 1), 1)
    return None


def read_audio(path: str | Path, *, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Reads a mono 16-bit TIMIT waveform as float32 in [-1, 1).

    Args:
        path: a NIST SPHERE or RIFF WAV file (the format is read from the header).
        sample_rate: the rate required.

    Raises:
        CorpusError: if the file is unreadable, truncated, not mono, or at another rate.
    """
    path = Path(path)
    try:
        samples, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.SoundFileError, RuntimeError, OSError) as error:
        raise CorpusError(
            f"cannot read audio file {str(path)!r}: {error} "
            "(expected NIST SPHERE or RIFF WAV, 16-bit PCM; shorten-compressed SPHERE is "
            "not supported: convert it with sph2pipe)"
        ) from None
    if rate != sample_rate:
        raise CorpusError(
            f"audio file {str(path)!r} has sample rate {rate} Hz; {sample_rate} Hz is required"
        )
    if samples.shape[1] != 1:
        raise CorpusError(
            f"audio file {str(path)!r} has {samples.shape[1]} channels; 1 is required"
        )
    declared = _declared_frames(path)
    if declared is not None and declared != samples.shape[0]:
        raise CorpusError(
            f"audio file {str(path)!r} is truncated: its header declares {declared} samples "
            f"but only {samples.shape[0]} are present"
        )
    return samples[:, 0]


def read_phn(path: str | Path | None, num_samples: int) -> list[PhoneSegment]:
    """Reads and checks a PHN file (``start end phone`` per line, in samples).

    Args:
        path: the PHN file; None stands for a missing one.
        num_samples: the length of the utterance's audio.

    Raises:
        CorpusError: naming the file and line, if the file is missing or empty, a
            line is malformed, a symbol is not one of TIMIT's 61, or the
            segments are not contiguous (start != previous end), empty
            (end <= start) or run past the audio (end > num_samples).
    """
    if path is None:
        raise CorpusError("missing PHN file (expected <UTT>.PHN next to the audio)")
    path = Path(path)
    if not path.is_file():
        raise CorpusError(f"missing PHN file {str(path)!r}")
    segments: list[PhoneSegment] = []
    with path.open(encoding="ascii", errors="replace") as handle:
        for number, line in enumerate(handle, start=1):
            fields = line.split()
            if not fields:
                continue
            where = f"{str(path)!r} line {number}"
            if len(fields) != 3 or not (fields[0].isdigit() and fields[1].isdigit()):
                raise CorpusError(f"{where}: expected 'START END PHONE', got {line.strip()!r}")
            start, end, phone = int(fields[0]), int(fields[1]), fields[2].lower()
            if phone not in _PHONE_SET:
                raise CorpusError(
                    f"{where}: unknown phone symbol {fields[2]!r}; allowed: {', '.join(PHONES_61)}"
                )
            if end <= start:
                raise CorpusError(f"{where}: segment end {end} <= start {start}")
            if segments and start != segments[-1].end:
                raise CorpusError(
                    f"{where}: segment starts at {start} but the previous one ends at "
                    f"{segments[-1].end} (segments must be contiguous)"
                )
            if end > num_samples:
                raise CorpusError(
                    f"{where}: segment end {end} is past the audio's {num_samples} samples"
                )
            segments.append(PhoneSegment(start, end, phone))
    if not segments:
        raise CorpusError(f"PHN file {str(path)!r} holds no segment")
    return segments


def read_utterance(
    utterance: Utterance, *, sample_rate: int = SAMPLE_RATE
) -> tuple[np.ndarray, list[PhoneSegment]]:
    """Reads and checks an utterance's audio and phone segments.

    Raises:
        CorpusError: see :func:`read_audio` and :func:`read_phn`.
    """
    audio = read_audio(utterance.audio_path, sample_rate=sample_rate)
    if utterance.phn_path is None:
        raise CorpusError(
            f"missing PHN file for audio {str(utterance.audio_path)!r} "
            "(expected <UTT>.PHN in the same folder)"
        )
    return audio, read_phn(utterance.phn_path, audio.shape[0])
