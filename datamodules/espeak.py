"""A small ctypes binding of libespeak-ng, from the `espeakng-loader` wheel.

Only what the synthetic corpus needs: synchronous synthesis into memory with
phoneme and word events, whose sample indices give phone boundaries exact to
the sample. libespeak-ng is a process-wide singleton: one `Espeak` per process
(parallel generation uses processes, never threads).
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from pathlib import Path

import numpy as np

AUDIO_OUTPUT_SYNCHRONOUS = 2
INITIALIZE_PHONEME_EVENTS = 0x0001
EVENT_LIST_TERMINATED = 0
EVENT_WORD = 1
EVENT_PHONEME = 7
PARAMETER_RATE, PARAMETER_VOLUME, PARAMETER_PITCH, PARAMETER_RANGE = 1, 2, 3, 4
CHARS_UTF8 = 1


class _Event(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", ctypes.c_char * 8),
    ]


_Callback = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event)
)


class EspeakError(RuntimeError):
    """libespeak-ng could not be loaded or refused a request."""


@dataclass(frozen=True)
class Synthesis:
    """One synthesized text.

    Attributes:
        samples: int16 audio at ``sample_rate``.
        sample_rate: espeak's output rate (22050 Hz).
        phonemes: (sample index, espeak mnemonic with stress marks removed).
        words: (sample index, character offset (1-based), character length).
    """

    samples: np.ndarray
    sample_rate: int
    phonemes: list[tuple[int, str]]
    words: list[tuple[int, int, int]]


class Espeak:
    """The process's libespeak-ng, initialised with phoneme events on."""

    _instance: Espeak | None = None

    def __init__(self) -> None:
        try:
            import espeakng_loader
        except ImportError as error:  # pragma: no cover - a declared dependency
            raise EspeakError("the espeakng-loader package is required") from error
        self._lib = ctypes.CDLL(espeakng_loader.get_library_path())
        self._libc = ctypes.CDLL(None)
        self._lib.espeak_Initialize.restype = ctypes.c_int
        self._data_path = Path(espeakng_loader.get_data_path())
        rate = self._lib.espeak_Initialize(
            AUDIO_OUTPUT_SYNCHRONOUS, 0, str(self._data_path).encode(), INITIALIZE_PHONEME_EVENTS
        )
        if rate <= 0:
            raise EspeakError(f"espeak_Initialize failed (returned {rate})")
        self.sample_rate = rate
        self._audio: list[np.ndarray] = []
        self._phonemes: list[tuple[int, str]] = []
        self._words: list[tuple[int, int, int]] = []
        # Kept on self: ctypes callbacks must outlive every call into the library.
        self._callback = _Callback(self._on_audio)
        self._lib.espeak_SetSynthCallback(self._callback)

    @classmethod
    def instance(cls) -> Espeak:
        if cls._instance is None:
            cls._instance = cls()
        return cls._instance

    def _on_audio(self, wav: ctypes.POINTER(ctypes.c_short), count: int, events) -> int:  # type: ignore[valid-type]
        if count > 0:
            self._audio.append(np.ctypeslib.as_array(wav, shape=(count,)).copy())
        index = 0
        while events[index].type != EVENT_LIST_TERMINATED:
            event = events[index]
            if event.type == EVENT_PHONEME:
                name = bytes(event.id).split(b"\0", 1)[0].decode("ascii", "replace")
                self._phonemes.append((event.sample, name))
            elif event.type == EVENT_WORD:
                self._words.append((event.sample, event.text_position, event.length))
            index += 1
        return 0

    def set_voice(self, voice: str) -> None:
        """Selects a voice such as ``en-us+f3`` or ``en-us+klatt3``.

        Raises:
            EspeakError: if espeak has no such voice or variant.
        """
        _, _, variant = voice.partition("+")
        # espeak silently falls back to the plain voice for an unknown variant.
        if variant and variant not in self.variants():
            raise EspeakError(
                f"espeak has no voice {voice!r}: unknown variant {variant!r}; "
                f"known: {', '.join(self.variants())}"
            )
        if self._lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise EspeakError(f"espeak has no voice {voice!r} (expected e.g. 'en-us+m3')")

    def variants(self) -> tuple[str, ...]:
        """Names of the voice variants in espeak's data (``m1``, ``f3``, ``klatt2``, ...)."""
        return tuple(sorted(path.name for path in (self._data_path / "voices" / "!v").iterdir()))

    def set_prosody(self, *, rate: int, pitch: int, pitch_range: int) -> None:
        """Sets speaking rate (words per minute, 80 to 450), base pitch and pitch range (0 to 100).

        Raises:
            EspeakError: for a value outside espeak's range.
        """
        for name, value, low, high in (
            ("rate", rate, 80, 450), ("pitch", pitch, 0, 100), ("pitch_range", pitch_range, 0, 100),
        ):  # fmt: skip
            if not low <= int(value) <= high:
                raise EspeakError(f"{name} must be in [{low}, {high}], got {value}")
        for parameter, value in (
            (PARAMETER_RATE, rate), (PARAMETER_PITCH, pitch), (PARAMETER_RANGE, pitch_range),
            (PARAMETER_VOLUME, 100),
        ):  # fmt: skip
            self._lib.espeak_SetParameter(parameter, int(value), 0)

    def synthesize(
        self, text: str, *, voice: str, rate: int, pitch: int, pitch_range: int, seed: int = 0
    ) -> Synthesis:
        """Synthesizes ``text`` with a voice such as ``en-us+f3``.

        The audio also depends on what this process synthesized before (espeak
        keeps its pitch-flutter and waveform phase between calls): for output
        that depends on the arguments alone, make the same calls in the same
        order in a fresh process.

        Args:
            text: the text, UTF-8.
            voice: espeak voice name, with an optional ``+variant``.
            rate: words per minute (80 to 450).
            pitch: base pitch, 0 to 100.
            pitch_range: pitch range, 0 to 100.
            seed: seed of the noise that breathy voice variants add.

        Raises:
            EspeakError: for an unknown voice, a value out of range, or a failed synthesis.
        """
        self.set_voice(voice)
        self.set_prosody(rate=rate, pitch=pitch, pitch_range=pitch_range)
        self._audio, self._phonemes, self._words = [], [], []
        # Breathy voice variants add noise from espeak's own generator (and the
        # C library's rand()): seeding both makes the audio a function of the
        # arguments alone.
        self._lib.espeak_ng_SetRandSeed(ctypes.c_long(int(seed) & 0x7FFFFFFF))
        self._libc.srand(int(seed) & 0x7FFFFFFF)
        encoded = text.encode()
        status = self._lib.espeak_Synth(encoded, len(encoded) + 1, 0, 0, 0, CHARS_UTF8, None, None)
        self._lib.espeak_Synchronize()
        if status != 0:
            raise EspeakError(f"espeak_Synth failed with status {status} for {text!r}")
        samples = np.concatenate(self._audio) if self._audio else np.zeros(0, np.int16)
        phonemes = [(sample, name.lstrip("',")) for sample, name in self._phonemes]
        return Synthesis(samples.astype(np.int16), self.sample_rate, phonemes, list(self._words))
