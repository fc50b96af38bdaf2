"""`TIMITDataModule`: TIMIT (or the synthetic TIMIT-format corpus) as frame-labelled features.

``prepare_data`` (once per node) scans the corpus, checks every file, computes
log-mel features with per-speaker CMVN and frame targets, and caches them.
``setup`` only loads the cache, verifying each split's checksum; a damaged
split is recomputed (with a warning naming the file). Before features are
computed from the synthetic corpus, its files are checked against their
checksums and damaged speakers regenerated. Splits: train = TRAIN without SA sentences;
dev and test = Kaldi's 50-speaker dev set and 24-speaker core test set on the
real TIMIT, or a by-speaker split of TEST on any other corpus (see
:mod:`mohaq.datamodules.speakers`). The optimization set, used by quantization
search and calibration, is a fixed subset of dev.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from mohaq.console import progress, progress_bar
from mohaq.datamodules.batching import (
    BucketBatchSampler,
    UtteranceDataset,
    bucket_batch_sampler,
    collate_utterances,
)
from mohaq.datamodules.feature_cache import (
    CacheDamagedError,
    FeatureCache,
    default_cache_root,
    file_lock,
    files_fingerprint,
    fingerprint,
)
from mohaq.datamodules.features import (
    FeatureConfig,
    frame_labels,
    num_frames,
    speaker_cmvn,
    utterance_features,
)
from mohaq.datamodules.phones import PHONES_39, PHONES_48, SCORING_MAP_48_TO_39
from mohaq.datamodules.speakers import is_standard_timit, split_test_speakers
from mohaq.datamodules.timit_corpus import (
    CorpusError,
    Utterance,
    is_sa,
    read_utterance,
    scan_corpus,
)

log = logging.getLogger(__name__)

SPLITS: tuple[str, ...] = ("train", "dev", "test")
_STAGE_SPLITS: dict[str | None, tuple[str, ...]] = {
    "fit": ("train", "dev"),
    "validate": ("dev",),
    "test": ("test",),
    "predict": ("test",),
    None: SPLITS,
}
# Bump when the synthetic corpus parameters' meaning changes, to regenerate.
_SYNTHETIC_FORMAT = 1
_SYNTHETIC_MANIFEST = "corpus.json"


def assign_splits(utterances: Sequence[Utterance]) -> dict[str, list[Utterance]]:
    """Splits utterances into train (all of TRAIN), dev and test (speakers of TEST).

    SA sentences never enter dev or test (the standard evaluation); in train
    they are whatever ``utterances`` holds (see ``scan_corpus(include_sa=...)``).

    Args:
        utterances: from :func:`scan_corpus`.
    """
    test_part = [u for u in utterances if u.part == "TEST" and not is_sa(u)]
    dev_speakers, test_speakers = split_test_speakers({u.speaker for u in test_part})
    return {
        "train": [u for u in utterances if u.part == "TRAIN"],
        "dev": [u for u in test_part if u.speaker in set(dev_speakers)],
        "test": [u for u in test_part if u.speaker in set(test_speakers)],
    }


def compute_split(
    utterances: Sequence[Utterance], config: FeatureConfig, description: str = "features"
) -> dict[str, Any]:
    """Features (CMVN per speaker, float16) and int8 targets of one split, packed
    (a progress bar named ``description`` on a terminal).

    Raises:
        CorpusError: if a file cannot be read (it was checked before, so only
            if it changed in between).
    """
    by_speaker: dict[str, list[int]] = defaultdict(list)
    for index, utterance in enumerate(utterances):
        by_speaker[utterance.speaker].append(index)
    features: list[torch.Tensor] = [torch.empty(0)] * len(utterances)
    targets: list[torch.Tensor] = [torch.empty(0)] * len(utterances)
    bar = progress_bar(len(utterances), description=description, unit="utt")
    try:
        for indices in by_speaker.values():
            raw = []
            for index in indices:
                audio, segments = read_utterance(utterances[index], sample_rate=config.sample_rate)
                values = utterance_features(audio, config)
                raw.append(values)
                targets[index] = frame_labels(segments, values.shape[0], config)
                bar.update(1)
            for index, normalized in zip(indices, speaker_cmvn(raw), strict=True):
                # float16 halves the cache; CMVN'd values are O(1), well within its precision.
                features[index] = normalized.half()
    finally:
        bar.close()
    dataset = UtteranceDataset.from_utterances(
        features,
        targets,
        [u.utterance_id for u in utterances],
        [u.speaker for u in utterances],
    )
    return {
        "features": dataset.features,
        "targets": dataset.targets,
        "lengths": dataset.lengths,
        "utterance_ids": dataset.utterance_ids,
        "speakers": dataset.speakers,
    }


def validate_utterances(utterances: Sequence[Utterance], config: FeatureConfig) -> None:
    """Reads every file once, so a bad one fails before any feature is computed.

    Raises:
        CorpusError: naming the first bad file (and PHN line).
    """
    for utterance in progress(
        utterances, total=len(utterances), description="checking", unit="utt"
    ):
        audio, _ = read_utterance(utterance, sample_rate=config.sample_rate)
        if num_frames(audio.shape[0], config) == 0:
            raise CorpusError(
                f"audio file {str(utterance.audio_path)!r} has {audio.shape[0]} samples, "
                f"fewer than one {config.frame_length}-sample frame"
            )


def _require(condition: bool, name: str, value: object, allowed: str) -> None:
    if not condition:
        raise ValueError(f"{name}={value!r} is not allowed; expected {allowed}")


class TIMITDataModule(pl.LightningDataModule):
    """TIMIT frame-classification data: log-mel + CMVN features, 48-phone targets.

    Args:
        corpus_dir: an LDC TIMIT tree; None generates the synthetic
            TIMIT-format corpus into ``<cache root>/synthetic/<parameter hash>``.
        cache_dir: the cache root (features under ``features/<key>``, the
            synthetic corpus under ``synthetic/``); None is ``~/.cache/mohaq``.
        num_mel_bins: filterbank channels (23: MOHAQ's SRU input).
        deltas: append deltas and delta-deltas (triples ``num_features``).
        batch_size: utterances per training/evaluation batch.
        bucket_by_length: batch utterances of similar length (less padding).
        num_workers: DataLoader worker processes.
        include_sa: train on the SA1/SA2 sentences too (standard recipes drop
            them); dev and test never hold them.
        optimization_set_utterances: size of the optimization set (a fixed
            subset of dev, for quantization search and calibration).
        seed: seeds the training batch order and the optimization-set choice.
        synthetic_speakers: speakers of the synthetic corpus.
        synthetic_utterances_per_speaker: utterances per synthetic speaker.
        synthetic_seed: seed of the synthetic corpus.
        synthetic_snr_db: (low, high) range of the synthetic corpus's noise SNR.

    Raises:
        ValueError: for an argument out of its range, naming it and what is allowed.
    """

    def __init__(
        self,
        corpus_dir: str | None = None,
        cache_dir: str | None = None,
        num_mel_bins: int = 23,
        deltas: bool = False,
        batch_size: int = 8,
        bucket_by_length: bool = True,
        num_workers: int = 0,
        include_sa: bool = False,
        optimization_set_utterances: int = 64,
        seed: int = 0,
        synthetic_speakers: int = 40,
        synthetic_utterances_per_speaker: int = 8,
        synthetic_seed: int = 0,
        synthetic_snr_db: tuple[float, float] = (5.0, 20.0),
    ) -> None:
        super().__init__()
        _require(
            corpus_dir is None or (isinstance(corpus_dir, str) and corpus_dir != ""),
            "corpus_dir",
            corpus_dir,
            "a TIMIT folder path or None (synthetic corpus)",
        )
        _require(
            cache_dir is None or (isinstance(cache_dir, str) and cache_dir != ""),
            "cache_dir",
            cache_dir,
            "a folder path or None (~/.cache/mohaq)",
        )
        _require(
            isinstance(num_mel_bins, int) and num_mel_bins >= 1,
            "num_mel_bins",
            num_mel_bins,
            "a positive integer such as 23 or 40",
        )
        _require(isinstance(deltas, bool), "deltas", deltas, "True or False")
        _require(
            isinstance(batch_size, int) and batch_size >= 1,
            "batch_size",
            batch_size,
            "a positive integer",
        )
        _require(
            isinstance(bucket_by_length, bool),
            "bucket_by_length",
            bucket_by_length,
            "True or False",
        )
        _require(
            isinstance(num_workers, int) and num_workers >= 0,
            "num_workers",
            num_workers,
            "an integer >= 0",
        )
        _require(isinstance(include_sa, bool), "include_sa", include_sa, "True or False")
        _require(
            isinstance(optimization_set_utterances, int) and optimization_set_utterances >= 1,
            "optimization_set_utterances",
            optimization_set_utterances,
            "a positive integer",
        )
        _require(isinstance(seed, int), "seed", seed, "an integer")
        _require(
            isinstance(synthetic_speakers, int) and synthetic_speakers >= 4,
            "synthetic_speakers",
            synthetic_speakers,
            "an integer >= 4 (train, dev and test each need speakers)",
        )
        _require(
            isinstance(synthetic_utterances_per_speaker, int)
            and synthetic_utterances_per_speaker >= 1,
            "synthetic_utterances_per_speaker",
            synthetic_utterances_per_speaker,
            "a positive integer",
        )
        _require(isinstance(synthetic_seed, int), "synthetic_seed", synthetic_seed, "an integer")
        snr = tuple(synthetic_snr_db)
        _require(
            len(snr) == 2 and all(isinstance(v, int | float) for v in snr) and snr[0] <= snr[1],
            "synthetic_snr_db",
            synthetic_snr_db,
            "(low, high) in dB with low <= high",
        )
        try:
            self.feature_config = FeatureConfig(num_mel_bins=num_mel_bins, deltas=deltas)
        except ValueError as error:
            raise ValueError(f"num_mel_bins={num_mel_bins!r} is not allowed: {error}") from None
        self.save_hyperparameters()
        self.corpus_dir = corpus_dir
        self.cache_root = Path(cache_dir).expanduser() if cache_dir else default_cache_root()
        self.batch_size = batch_size
        self.bucket_by_length = bucket_by_length
        self.num_workers = num_workers
        self.include_sa = include_sa
        self.optimization_set_utterances = optimization_set_utterances
        self.seed = seed
        self.synthetic = {
            "speakers": synthetic_speakers,
            "utterances_per_speaker": synthetic_utterances_per_speaker,
            "seed": synthetic_seed,
            "snr_db": (float(snr[0]), float(snr[1])),
        }
        self.datasets: dict[str, UtteranceDataset] = {}
        self._optimization: UtteranceDataset | None = None
        self._cache: FeatureCache | None = None
        self._cache_key: str | None = None

    # -- what the data decides, known without any data -----------------------------
    @property
    def num_features(self) -> int:
        """Feature dimension: ``num_mel_bins``, times 3 with deltas."""
        return self.feature_config.num_features

    @property
    def num_classes(self) -> int:
        """Output classes: the 48 phones."""
        return len(PHONES_48)

    @property
    def scoring_map(self) -> list[int]:
        """48-class index -> 39-class scoring index."""
        return list(SCORING_MAP_48_TO_39)

    @property
    def phones(self) -> tuple[str, ...]:
        return PHONES_48

    @property
    def scoring_phones(self) -> tuple[str, ...]:
        return PHONES_39

    # -- corpus and cache ---------------------------------------------------------------
    def _synthetic_dir(self) -> Path:
        params = {"format": _SYNTHETIC_FORMAT, **self.synthetic}
        return self.cache_root / "synthetic" / fingerprint(params)

    def corpus_root(self, *, generate: bool = False) -> Path:
        """The corpus folder; the synthetic one is generated first if ``generate``.

        Raises:
            CorpusError: if the synthetic corpus is needed but not generated yet.
        """
        if self.corpus_dir is not None:
            return Path(self.corpus_dir).expanduser()
        target = self._synthetic_dir()
        if (target / _SYNTHETIC_MANIFEST).is_file():
            return target
        if not generate:
            raise CorpusError(
                f"synthetic corpus {str(target)!r} is not generated; call prepare_data() first"
            )
        from mohaq.datamodules.synth_timit import generate_corpus  # heavy: espeak

        with file_lock(target.with_name(target.name + ".lock")):
            if (target / _SYNTHETIC_MANIFEST).is_file():  # another process made it meanwhile
                return target
            log.info(
                "generating the synthetic TIMIT-format corpus (%d speakers x %d utterances) into %s",
                self.synthetic["speakers"],
                self.synthetic["utterances_per_speaker"],
                target,
            )
            # Generated aside and renamed in one step: a killed run leaves only a
            # temporary folder, never a half corpus at the trusted path. Under
            # the lock, such leftovers of this target are a killed run's: removed.
            prefix = f".tmp-{target.name}-"
            for stale in target.parent.glob(f"{prefix}*"):
                shutil.rmtree(stale, ignore_errors=True)
            staging = Path(tempfile.mkdtemp(prefix=prefix, dir=target.parent))
            try:
                generate_corpus(
                    staging,
                    speakers=self.synthetic["speakers"],
                    utterances_per_speaker=self.synthetic["utterances_per_speaker"],
                    seed=self.synthetic["seed"],
                    snr_db=self.synthetic["snr_db"],
                )
                if target.exists():
                    shutil.rmtree(target)
                os.replace(staging, target)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
        return target

    def _splits(self, root: Path) -> dict[str, list[Utterance]]:
        return assign_splits(scan_corpus(root, include_sa=self.include_sa))

    def _cache_for(
        self, root: Path, splits: dict[str, list[Utterance]]
    ) -> tuple[FeatureCache, str]:
        files = [
            path
            for name in SPLITS
            for u in splits[name]
            for path in (u.audio_path, u.phn_path)
            if path is not None
        ]
        key = fingerprint(
            {
                "corpus": str(root.resolve()),
                "features": self.feature_config.as_dict(),
                "include_sa": self.include_sa,
                "splits": {name: [u.utterance_id for u in splits[name]] for name in SPLITS},
                "files": files_fingerprint(files),
            }
        )
        return FeatureCache(self.cache_root / "features" / key), key

    def _resolve_cache(self) -> FeatureCache:
        if self._cache is None:
            root = self.corpus_root()
            self._cache, self._cache_key = self._cache_for(root, self._splits(root))
        return self._cache

    def _repaired_synthetic_corpus(self, root: Path) -> bool:
        """Checks the synthetic corpus against its checksums, regenerating damaged
        speakers; True if any file was rewritten (then the cache key changed)."""
        if self.corpus_dir is not None:
            return False  # the user's corpus: no checksums of ours to check against
        from mohaq.datamodules.synth_timit import verify_corpus  # heavy: espeak

        with file_lock(root.with_name(root.name + ".lock")):
            return bool(verify_corpus(root))

    def prepare_data(self) -> None:
        """Checks the corpus and computes the feature cache, unless it is complete.

        Raises:
            CorpusError: for a missing or malformed corpus or file, before any
                feature is computed.
            FeatureCacheError: the cache cannot be written (full disk).
        """
        root = self.corpus_root(generate=True)
        while not self._prepare_cache(root):
            pass  # the synthetic corpus was repaired: its files, and so the key, changed

    def _prepare_cache(self, root: Path) -> bool:
        """Computes the cache for the corpus as it is; False if the corpus had to be repaired first."""
        splits = self._splits(root)
        for name in SPLITS:
            if not splits[name]:
                raise CorpusError(f"corpus {str(root)!r} gives an empty {name!r} split")
        cache, key = self._cache_for(root, splits)
        self._cache, self._cache_key = cache, key
        with cache.lock():
            manifest = cache.manifest()
            if cache.is_complete(SPLITS) and manifest is not None and manifest.get("key") == key:
                return True
            if self._repaired_synthetic_corpus(root):
                return False
            every = [u for name in SPLITS for u in splits[name]]
            log.info("checking %d utterances of %s", len(every), root)
            validate_utterances(every, self.feature_config)
            cache.begin()
            for name in SPLITS:
                log.info("computing %s features (%d utterances)", name, len(splits[name]))
                cache.save_split(
                    name, compute_split(splits[name], self.feature_config, f"{name} features")
                )
            test_speakers = {u.speaker for u in every if u.part == "TEST"}
            cache.commit(
                SPLITS,
                {
                    "key": key,
                    "corpus": str(root.resolve()),
                    "standard_timit": is_standard_timit(test_speakers),
                    "features": self.feature_config.as_dict(),
                    "utterances": {name: len(splits[name]) for name in SPLITS},
                    "speakers": {
                        name: sorted({u.speaker for u in splits[name]}) for name in SPLITS
                    },
                },
            )
            log.info("feature cache written to %s", cache.directory)
        return True

    def setup(self, stage: str | None = None) -> None:
        """Loads the cached splits that ``stage`` needs (no computation).

        Raises:
            FileNotFoundError: if ``prepare_data`` has not completed the cache.
        """
        for name in _STAGE_SPLITS.get(stage, SPLITS):
            self._load(name)

    def _recompute_split(self, name: str, damage: CacheDamagedError) -> dict[str, Any]:
        """A damaged split, computed again from the corpus and written back."""
        log.warning("%s; recomputing the %r split", damage, name)
        cache = self._resolve_cache()
        root = self.corpus_root()
        self._repaired_synthetic_corpus(root)
        with cache.lock():
            try:
                cache.verify_split(name)  # another process repaired it meanwhile
            except CacheDamagedError:
                utterances = self._splits(root)[name]
                cache.replace_split(name, compute_split(utterances, self.feature_config))
                log.warning("feature cache file %s was recomputed", cache.split_path(name))
        return cache.load_split(name)

    def _load(self, name: str) -> UtteranceDataset:
        if name not in self.datasets:
            try:
                payload = self._resolve_cache().load_split(name)
            except CacheDamagedError as damage:
                payload = self._recompute_split(name, damage)
            self.datasets[name] = UtteranceDataset(
                payload["features"],
                payload["targets"],
                payload["lengths"],
                payload["utterance_ids"],
                payload["speakers"],
            )
        return self.datasets[name]

    # -- optimization set ---------------------------------------------------------------
    def optimization_indices(self) -> list[int]:
        """Indices into the dev set of the optimization set (sorted, fixed by ``seed``)."""
        count = len(self._load("dev"))
        generator = torch.Generator().manual_seed(self.seed)
        chosen = torch.randperm(count, generator=generator)[: self.optimization_set_utterances]
        return sorted(chosen.tolist())

    @property
    def optimization_dataset(self) -> UtteranceDataset:
        """The optimization set: ``optimization_set_utterances`` dev utterances (all if fewer)."""
        if self._optimization is None:
            self._optimization = self._load("dev").subset(self.optimization_indices())
        return self._optimization

    def optimization_dataloader(self, batch_size: int | None = None) -> DataLoader:
        """The optimization set in a fixed order.

        Args:
            batch_size: utterances per batch; None is 1, so per-utterance
                statistics (MOHAQ's per-sequence activation thresholds) need no unpadding.

        Raises:
            ValueError: for a batch_size below 1.
        """
        size = 1 if batch_size is None else batch_size
        _require(
            isinstance(size, int) and size >= 1,
            "batch_size",
            batch_size,
            "a positive integer or None",
        )
        sampler = bucket_batch_sampler(
            self.optimization_dataset.lengths.tolist(), size, shuffle=False, bucket_by_length=False
        )
        return self._loader(self.optimization_dataset, sampler)

    # -- dataloaders --------------------------------------------------------------------
    def _loader(self, dataset: UtteranceDataset, sampler: BucketBatchSampler) -> DataLoader:
        return DataLoader(
            dataset,
            batch_sampler=sampler,
            collate_fn=collate_utterances,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def _evaluation_loader(self, name: str) -> DataLoader:
        dataset = self._load(name)
        sampler = bucket_batch_sampler(
            dataset.lengths.tolist(),
            self.batch_size,
            shuffle=False,
            bucket_by_length=self.bucket_by_length,
        )
        return self._loader(dataset, sampler)

    def train_dataloader(self) -> DataLoader:
        dataset = self._load("train")
        sampler = bucket_batch_sampler(
            dataset.lengths.tolist(),
            self.batch_size,
            shuffle=True,
            bucket_by_length=self.bucket_by_length,
            seed=self.seed,
        )
        return self._loader(dataset, sampler)

    def val_dataloader(self) -> DataLoader:
        return self._evaluation_loader("dev")

    def test_dataloader(self) -> DataLoader:
        return self._evaluation_loader("test")
