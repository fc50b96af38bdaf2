"""A synthetic speech-commands-style keyword corpus, made offline with libespeak-ng.

Fixed-length clips (1 s at 16 kHz by default) of one word each, spoken by many
synthetic speakers: English accents of espeak (US, UK received pronunciation,
Scottish, Lancastrian, West Midlands, Caribbean) times voice variants, each
speaker with its own pitch, pitch range and speaking rate. Labels are the
command ``keywords``, ``"unknown"`` (other words) and ``"silence"`` (noise
only), in that order. Each word is placed at a random offset in its clip, with
white and brown noise at a random SNR and a random gain. Speakers are split
into train, validation and test, so no voice is shared across splits.

Files in the corpus folder: ``train.npz``, ``val.npz``, ``test.npz`` (int16
``audio`` of shape ``(clips, samples)``, int64 ``labels``, ``speakers``) and
``keywords.json`` (the spec, the labels and the counts). The audio depends on
the spec alone when it is generated in a fresh process
(:func:`generate_in_fresh_process`, what :class:`KeywordDataModule` does):
espeak keeps state between syntheses in one process.

Command line::

    python -m mohaq.datamodules.keywords --out DIR [--speakers N] [--seed S]

:class:`KeywordDataModule` turns the clips into log-mel frames normalized with
the training set's mean and deviation per bin; its batches are
``(features (B, T, mels), labels (B,))``, and ``optimization_dataloader()``
(the validation speakers) is the split a precision search optimizes on.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from mohaq.datamodules.features import FeatureConfig, mel_filterbank, power_spectrum
from mohaq.datamodules.synth_timit import add_noise, resample

SAMPLE_RATE = 16_000
FORMAT_VERSION = 1
MANIFEST = "keywords.json"
SPLITS: tuple[str, ...] = ("train", "val", "test")
#: The ten command words of Google's Speech Commands task.
KEYWORDS: tuple[str, ...] = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
#: Words outside the vocabulary, labelled "unknown".
UNKNOWN_WORDS: tuple[str, ...] = (
    "bed", "bird", "cat", "dog", "happy", "house", "tree", "wow", "seven", "learn", "follow",
    "forward", "visual", "marvin", "sheila", "nine",
)  # fmt: skip
ACCENTS: tuple[str, ...] = (
    "en-us", "en", "en-gb-x-rp", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-029",
)  # fmt: skip
MALE_VOICES: tuple[str, ...] = (
    "m1", "m2", "m3", "m4", "m5", "m6", "m7", "klatt", "klatt2", "klatt3", "klatt4", "adam",
    "benjamin", "david", "ed", "john", "max", "paul",
)  # fmt: skip
FEMALE_VOICES: tuple[str, ...] = (
    "f1",
    "f2",
    "f3",
    "f4",
    "f5",
    "anika",
    "belinda",
    "linda",
    "steph",
)


class KeywordCorpusError(ValueError):
    """A corpus spec out of range, or a corpus folder that does not match its spec."""


@dataclass(frozen=True)
class KeywordCorpusSpec:
    """What the keyword corpus holds.

    Attributes:
        keywords: the command words (one label each).
        unknown_words: other words, all labelled ``"unknown"``.
        speakers: synthetic speakers (at least 3: train, validation, test).
        repetitions: clips of each keyword per speaker.
        unknown_clips: clips of unknown words per speaker (words drawn at random).
        silence_clips: noise-only clips per speaker.
        clip_seconds: length of every clip.
        snr_db: the range of the speech-to-noise ratio, dB.
        val_fraction, test_fraction: shares of the speakers in validation and test.
        seed: seeds the speakers, the offsets, the noise and the gains.
    """

    keywords: tuple[str, ...] = KEYWORDS
    unknown_words: tuple[str, ...] = UNKNOWN_WORDS
    speakers: int = 40
    repetitions: int = 3
    unknown_clips: int = 4
    silence_clips: int = 3
    clip_seconds: float = 1.0
    snr_db: tuple[float, float] = (5.0, 30.0)
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "keywords", tuple(self.keywords))
        object.__setattr__(self, "unknown_words", tuple(self.unknown_words))
        object.__setattr__(self, "snr_db", tuple(float(v) for v in self.snr_db))
        if not self.keywords:
            raise KeywordCorpusError("keywords is empty; give at least one command word")
        overlap = sorted(set(self.keywords) & set(self.unknown_words))
        if overlap or len(set(self.keywords)) != len(self.keywords):
            raise KeywordCorpusError(
                f"keywords must be distinct and not among unknown_words; repeated: {overlap}"
            )
        if self.speakers < 3:
            raise KeywordCorpusError(
                f"speakers must be >= 3 (train, validation, test), got {self.speakers}"
            )
        for name in ("repetitions", "unknown_clips", "silence_clips"):
            if getattr(self, name) < 0:
                raise KeywordCorpusError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.repetitions < 1:
            raise KeywordCorpusError(f"repetitions must be >= 1, got {self.repetitions}")
        if not 0.5 <= self.clip_seconds <= 10.0:
            raise KeywordCorpusError(f"clip_seconds must be in [0.5, 10], got {self.clip_seconds}")
        low, high = self.snr_db
        if low > high:
            raise KeywordCorpusError(
                f"snr_db must be (low, high) with low <= high, got {self.snr_db}"
            )
        for name in ("val_fraction", "test_fraction"):
            if not 0.0 < getattr(self, name) < 0.5:
                raise KeywordCorpusError(f"{name} must be in (0, 0.5), got {getattr(self, name)}")

    @property
    def labels(self) -> tuple[str, ...]:
        return (*self.keywords, "unknown", "silence")

    @property
    def clip_samples(self) -> int:
        return int(round(self.clip_seconds * SAMPLE_RATE))

    def to_dict(self) -> dict:
        values = asdict(self)
        values["keywords"], values["unknown_words"] = list(self.keywords), list(self.unknown_words)
        values["snr_db"] = list(self.snr_db)
        return values

    @classmethod
    def from_dict(cls, values: dict) -> KeywordCorpusSpec:
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


@dataclass(frozen=True)
class Speaker:
    """One synthetic speaker: an espeak voice and its prosody."""

    index: int
    split: str
    voice: str
    pitch: int
    pitch_range: int
    rate: int


def speakers_of(spec: KeywordCorpusSpec) -> list[Speaker]:
    """The spec's speakers, the last ones held out for test, those before for validation."""
    rng = random.Random(f"keywords/speakers/{spec.seed}")
    test = max(1, round(spec.test_fraction * spec.speakers))
    val = max(1, round(spec.val_fraction * spec.speakers))
    found = []
    for index in range(spec.speakers):
        female = rng.random() < 0.45
        variant = rng.choice(FEMALE_VOICES if female else MALE_VOICES)
        split = (
            "test" if index >= spec.speakers - test
            else "val" if index >= spec.speakers - test - val else "train"
        )  # fmt: skip
        found.append(Speaker(
            index=index, split=split, voice=f"{rng.choice(ACCENTS)}+{variant}",
            pitch=rng.randint(50, 90) if female else rng.randint(20, 55),
            pitch_range=rng.randint(20, 90), rate=rng.randint(130, 220),
        ))  # fmt: skip
    return found


def _trimmed(speech: np.ndarray) -> np.ndarray:
    """The word without espeak's leading and trailing silence."""
    loud = np.nonzero(np.abs(speech) > 0.02 * max(float(np.abs(speech).max()), 1e-9))[0]
    return speech[loud[0] : loud[-1] + 1] if loud.size else speech


def _clip(word: np.ndarray | None, spec: KeywordCorpusSpec, rng: np.random.Generator) -> np.ndarray:
    """A fixed-length int16 clip: the word at a random offset (or silence), noise, a gain."""
    samples = spec.clip_samples
    clean = np.zeros(samples)
    if word is not None:
        word = word[:samples]
        start = int(rng.integers(0, samples - len(word) + 1))
        clean[start : start + len(word)] = word
        audio = add_noise(clean, float(rng.uniform(*spec.snr_db)), rng)
    else:
        # Noise alone: add_noise scales its noise to the signal, so give it a faint one.
        audio = add_noise(rng.standard_normal(samples) * 1e-3, 0.0, rng)
    audio *= float(rng.uniform(0.05, 0.7)) / max(float(np.abs(audio).max()), 1e-9)
    return np.round(audio * 32767).astype(np.int16)


def generate_keyword_corpus(out_dir: str | Path, spec: KeywordCorpusSpec) -> dict[str, int]:
    """Synthesizes the corpus into ``out_dir`` (in this process); returns clips per split.

    Raises:
        KeywordCorpusError: from the spec.
        EspeakError: if libespeak-ng cannot be loaded or refuses a voice.
    """
    from mohaq.datamodules.espeak import Espeak

    engine = Espeak.instance()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    labels = spec.labels
    clips: dict[str, list[tuple[np.ndarray, int, int]]] = {split: [] for split in SPLITS}
    for speaker in speakers_of(spec):
        rng = np.random.default_rng([spec.seed, speaker.index])
        items = [(w, labels.index(w)) for w in spec.keywords for _ in range(spec.repetitions)]
        unknown = labels.index("unknown")
        drawn = (
            rng.choice(len(spec.unknown_words), size=spec.unknown_clips)
            if spec.unknown_words
            else []
        )
        items += [(spec.unknown_words[int(i)], unknown) for i in drawn]
        items += [(None, labels.index("silence"))] * spec.silence_clips
        for number, (text, label) in enumerate(items):
            word = None
            if text is not None:
                synthesis = engine.synthesize(
                    text, voice=speaker.voice, rate=speaker.rate + int(rng.integers(-15, 16)),
                    pitch=speaker.pitch, pitch_range=speaker.pitch_range,
                    seed=spec.seed * 1_000_003 + speaker.index * 1009 + number,
                )  # fmt: skip
                speech = resample(synthesis.samples / 32768.0, synthesis.sample_rate, SAMPLE_RATE)
                word = _trimmed(speech)
            clips[speaker.split].append((_clip(word, spec, rng), label, speaker.index))
    counts = {}
    for split, items in clips.items():
        np.savez_compressed(
            out / f"{split}.npz",
            audio=np.stack([audio for audio, _, _ in items]),
            labels=np.asarray([label for _, label, _ in items], dtype=np.int64),
            speakers=np.asarray([speaker for _, _, speaker in items], dtype=np.int64),
        )
        counts[split] = len(items)
    manifest = {"format": FORMAT_VERSION, "spec": spec.to_dict(), "labels": list(labels),
                "clips": counts}  # fmt: skip
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return counts


def generate_in_fresh_process(out_dir: str | Path, spec: KeywordCorpusSpec) -> None:
    """:func:`generate_keyword_corpus` in a new interpreter, so the audio depends
    on the spec alone (espeak's state carries over between syntheses in one process).

    Raises:
        KeywordCorpusError: if the generation fails (its error output is included).
    """
    command = [sys.executable, "-m", "mohaq.datamodules.keywords", "--out", str(out_dir),
               "--spec-json", json.dumps(spec.to_dict())]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise KeywordCorpusError(f"keyword corpus generation failed:\n{done.stderr.strip()}")


def read_manifest(corpus_dir: str | Path) -> dict | None:
    """The corpus folder's manifest, or None when it has none."""
    path = Path(corpus_dir) / MANIFEST
    return json.loads(path.read_text()) if path.is_file() else None


def clip_features(audio: torch.Tensor, config: FeatureConfig) -> torch.Tensor:
    """Log-mel frames of equal-length clips ``(N, samples)`` -> ``(N, frames, mels)``,
    as :func:`mohaq.datamodules.features.log_mel` computes them, the filterbank built once."""
    bank = mel_filterbank(config).T.to(torch.float64)
    # Many tiny products: one thread each is faster than a pool that a busy
    # machine makes wait (100x on 2 loaded cores).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        frames = [power_spectrum(clip, config) @ bank for clip in audio]
    finally:
        torch.set_num_threads(threads)
    return torch.log(torch.stack(frames).clamp_min(config.log_floor)).float()


@dataclass
class _Split:
    features: torch.Tensor
    labels: torch.Tensor
    speakers: torch.Tensor


class KeywordDataModule(pl.LightningDataModule):
    """The synthetic keyword corpus as log-mel frames (see the module docstring).

    Args:
        corpus_dir: the corpus folder; generated there from the spec arguments
            when it holds no corpus.
        batch_size: clips per batch.
        num_mel_bins: log-mel channels per frame (10 ms frames of 25 ms).
        speakers, repetitions, seed: the corpus spec (:class:`KeywordCorpusSpec`)
            used when generating; a corpus already there must have been made
            with the same ones.

    Raises:
        KeywordCorpusError: in ``prepare_data`` when the folder holds a corpus
            made from another spec.
    """

    def __init__(
        self,
        corpus_dir: str = "data/keywords",
        *,
        batch_size: int = 32,
        num_mel_bins: int = 40,
        speakers: int = 40,
        repetitions: int = 3,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.corpus_dir = Path(corpus_dir)
        self.batch_size = batch_size
        self.spec = KeywordCorpusSpec(speakers=speakers, repetitions=repetitions, seed=seed)
        self.features = FeatureConfig(num_mel_bins=num_mel_bins)
        self._splits: dict[str, _Split] = {}

    @property
    def num_classes(self) -> int:
        return len(self.spec.labels)

    @property
    def num_features(self) -> int:
        return self.features.num_mel_bins

    def split_sizes(self) -> dict[str, int]:
        """Clips per split (after :meth:`setup`)."""
        return {split: len(data.labels) for split, data in self._splits.items()}

    def prepare_data(self) -> None:
        manifest = read_manifest(self.corpus_dir)
        if manifest is None:
            generate_in_fresh_process(self.corpus_dir, self.spec)
        elif KeywordCorpusSpec.from_dict(manifest["spec"]) != self.spec:
            raise KeywordCorpusError(
                f"{self.corpus_dir} holds a keyword corpus of another spec "
                f"({manifest['spec']}); use another corpus_dir or the same arguments"
            )

    def _load(self, split: str) -> _Split:
        with np.load(self.corpus_dir / f"{split}.npz") as data:
            audio = torch.from_numpy(data["audio"].astype(np.float32) / 32768.0)
            labels = torch.from_numpy(data["labels"])
            speakers = torch.from_numpy(data["speakers"])
        cache = self.corpus_dir / f"{split}.logmel{self.features.num_mel_bins}.pt"
        if cache.is_file():
            features = torch.load(cache)
        else:
            features = clip_features(audio, self.features)
            torch.save(features, cache)
        return _Split(features, labels, speakers)

    def setup(self, stage: str | None = None) -> None:
        if self._splits:
            return
        splits = {split: self._load(split) for split in SPLITS}
        train = splits["train"].features
        mean, std = train.mean(dim=(0, 1)), train.std(dim=(0, 1)).clamp_min(1e-5)
        for split in splits.values():
            split.features = (split.features - mean) / std
        self._splits = splits

    def _loader(self, split: str, *, shuffle: bool = False) -> DataLoader:
        data = self._splits[split]
        return DataLoader(TensorDataset(data.features, data.labels),
                          batch_size=self.batch_size, shuffle=shuffle)  # fmt: skip

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def optimization_dataloader(self) -> DataLoader:
        """The split a precision search optimizes on: the validation speakers."""
        return self._loader("val")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mohaq.datamodules.keywords",
        description="Synthesize the keyword-spotting corpus with libespeak-ng.",
    )
    parser.add_argument("--out", required=True, help="the corpus folder")
    parser.add_argument("--speakers", type=int, default=KeywordCorpusSpec.speakers)
    parser.add_argument("--repetitions", type=int, default=KeywordCorpusSpec.repetitions)
    parser.add_argument("--seed", type=int, default=KeywordCorpusSpec.seed)
    parser.add_argument("--spec-json", help="the whole spec as JSON (overrides the others)")
    args = parser.parse_args(argv)
    try:
        spec = (
            KeywordCorpusSpec.from_dict(json.loads(args.spec_json)) if args.spec_json
            else KeywordCorpusSpec(speakers=args.speakers, repetitions=args.repetitions,
                                   seed=args.seed)
        )  # fmt: skip
        counts = generate_keyword_corpus(args.out, spec)
    except KeywordCorpusError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"keyword corpus in {args.out}: " + ", ".join(f"{n} {s}" for s, n in counts.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
