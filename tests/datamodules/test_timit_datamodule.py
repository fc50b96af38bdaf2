"""TIMITDataModule: properties, argument checks, prepare/setup, cache trust, loaders, optimization set."""

from __future__ import annotations

import os
import sys
import threading
import types
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from test_timit_corpus import write_small_corpus, write_utterance

import mohaq.datamodules.timit as timit_module
from mohaq.datamodules import TIMITDataModule
from mohaq.datamodules.batching import Batch
from mohaq.datamodules.feature_cache import MANIFEST, FeatureCacheError
from mohaq.datamodules.phones import IGNORE_INDEX, PHONES_39, PHONES_48, SCORING_MAP_48_TO_39
from mohaq.datamodules.timit_corpus import CorpusError


def _module(corpus: Path, cache: Path, **kwargs: object) -> TIMITDataModule:
    return TIMITDataModule(corpus_dir=str(corpus), cache_dir=str(cache), **kwargs)


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    return write_small_corpus(tmp_path / "corpus")


def _forbid_features(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("features were recomputed")

    monkeypatch.setattr(timit_module, "utterance_features", fail)


# -- construction ---------------------------------------------------------------------------------
def test_properties_need_no_data() -> None:
    data = TIMITDataModule(corpus_dir="/nonexistent")
    assert data.num_features == 23 and data.num_classes == 48
    assert data.scoring_map == list(SCORING_MAP_48_TO_39)
    assert data.phones == PHONES_48 and data.scoring_phones == PHONES_39
    assert TIMITDataModule(num_mel_bins=40, deltas=True).num_features == 120


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"batch_size": 0}, "batch_size=0 .*positive integer"),
        ({"num_mel_bins": 0}, "num_mel_bins=0"),
        ({"num_mel_bins": 200}, "num_mel_bins=200 .*empty"),
        ({"num_workers": -1}, "num_workers=-1"),
        ({"optimization_set_utterances": 0}, "optimization_set_utterances=0"),
        ({"synthetic_snr_db": (20.0, 5.0)}, r"synthetic_snr_db=\(20.0, 5.0\) .*low <= high"),
        ({"synthetic_speakers": 1}, "synthetic_speakers=1"),
        ({"corpus_dir": ""}, "corpus_dir=''"),
    ],
)
def test_bad_arguments_name_argument_value_and_allowed(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TIMITDataModule(**kwargs)


# -- prepare, setup, loaders ------------------------------------------------------------------------
def test_prepare_setup_and_loaders(corpus: Path, tmp_path: Path) -> None:
    data = _module(corpus, tmp_path / "cache", batch_size=2)
    data.prepare_data()
    data.setup("fit")
    assert len(data.datasets["train"]) == 4 and len(data.datasets["dev"]) == 4
    assert set(data.datasets["dev"].speakers) == {"FAAA0", "MBBB0"}
    batch = next(iter(data.train_dataloader()))
    assert isinstance(batch, Batch)
    # 0.5 s = 8000 samples -> 48 frames.
    assert batch.features.shape == (2, 48, 23) and batch.features.dtype == torch.float32
    assert batch.lengths.tolist() == [48, 48] and batch.targets.dtype == torch.long
    assert len(list(data.val_dataloader())) == 2
    data.setup("test")
    test_ids = [i for b in data.test_dataloader() for i in b.utterance_ids]
    assert sorted(test_ids) == ["FCCC0_SI1", "FCCC0_SX1", "MDDD0_SI1", "MDDD0_SX1"]
    # Per-speaker CMVN survives the float16 cache.
    train = data.datasets["train"]
    frames = train.features[: int(train.lengths[:2].sum())].float()  # FCJF0's two utterances
    torch.testing.assert_close(frames.mean(0), torch.zeros(23), atol=2e-3, rtol=0)
    torch.testing.assert_close(frames.std(0, unbiased=False), torch.ones(23), atol=2e-3, rtol=0)


def test_deltas_and_sa_option(corpus: Path, tmp_path: Path) -> None:
    data = _module(corpus, tmp_path / "cache", num_mel_bins=40, deltas=True, include_sa=True)
    data.prepare_data()
    data.setup("fit")
    assert data.datasets["train"].features.shape[1] == 120 == data.num_features
    assert "FCJF0_SA1" in data.datasets["train"].utterance_ids
    assert not [i for i in data.datasets["dev"].utterance_ids if i.endswith("_SA1")]


def test_lightning_fit_runs_and_moves_batches(corpus: Path, tmp_path: Path) -> None:
    class Probe(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(23, 48)
            self.epochs_seen: list[list[str]] = []

        def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
            assert isinstance(batch, Batch)
            logits = self.layer(batch.features)
            return torch.nn.functional.cross_entropy(
                logits.transpose(1, 2), batch.targets, ignore_index=IGNORE_INDEX
            )

        def on_train_epoch_start(self) -> None:
            self.epochs_seen.append([])

        def on_train_batch_start(self, batch: Batch, batch_idx: int) -> None:
            self.epochs_seen[-1].extend(batch.utterance_ids)

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.1)

    model = Probe()
    trainer = pl.Trainer(
        max_epochs=3,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(model, datamodule=_module(corpus, tmp_path / "cache", batch_size=1))
    assert all(sorted(epoch) == sorted(model.epochs_seen[0]) for epoch in model.epochs_seen)
    # The trainer calls set_epoch, so epochs see different orders.
    assert len({tuple(epoch) for epoch in model.epochs_seen}) > 1


# -- cache ---------------------------------------------------------------------------------------------
def test_second_prepare_loads_without_recomputing(
    corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _module(corpus, tmp_path / "cache").prepare_data()
    _forbid_features(monkeypatch)
    again = _module(corpus, tmp_path / "cache")
    again.prepare_data()
    again.setup(None)
    assert len(again.datasets["test"]) == 4
    # Another feature configuration is another cache entry: it must compute.
    with pytest.raises(AssertionError, match="recomputed"):
        _module(corpus, tmp_path / "cache", num_mel_bins=40).prepare_data()


def test_missing_manifest_or_leftover_temp_is_not_trusted(
    corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = _module(corpus, tmp_path / "cache")
    first.prepare_data()
    folder = first._resolve_cache().directory
    (folder / MANIFEST).unlink()  # as if killed before the manifest was written
    (folder / ".tmp-abc123").write_bytes(b"half a split")
    fresh = _module(corpus, tmp_path / "cache")
    with pytest.raises(FileNotFoundError, match="call prepare_data"):
        fresh.setup("fit")
    calls = []
    real = timit_module.utterance_features
    monkeypatch.setattr(timit_module, "utterance_features", lambda *a: calls.append(1) or real(*a))
    fresh.prepare_data()
    assert len(calls) == 12  # every utterance computed again
    assert not (folder / ".tmp-abc123").exists() and (folder / MANIFEST).is_file()
    fresh.setup("fit")


def test_a_changed_corpus_file_invalidates_the_cache(
    corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _module(corpus, tmp_path / "cache").prepare_data()
    phn = corpus / "TRAIN/DR1/FCJF0/SI1.PHN"
    os.utime(phn, ns=(phn.stat().st_atime_ns, phn.stat().st_mtime_ns + 10**9))
    _forbid_features(monkeypatch)
    with pytest.raises(AssertionError, match="recomputed"):
        _module(corpus, tmp_path / "cache").prepare_data()


def test_concurrent_prepare_waits_for_the_lock_holder(corpus: Path, tmp_path: Path) -> None:
    first = _module(corpus, tmp_path / "cache")
    first.prepare_data()
    cache = first._resolve_cache()
    (cache.directory / MANIFEST).unlink()
    second = _module(corpus, tmp_path / "cache")
    with cache.lock():  # another process computing
        worker = threading.Thread(target=second.prepare_data)
        worker.start()
        worker.join(timeout=0.3)
        assert worker.is_alive()  # it waits instead of deleting the other's temporary files
    worker.join(timeout=30)
    assert not worker.is_alive() and cache.is_complete(("train", "dev", "test"))


def test_damaged_cache_bytes_are_detected_and_the_split_recomputed(
    corpus: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = _module(corpus, tmp_path / "cache")
    first.prepare_data()
    first.setup("fit")
    original = first.datasets["dev"].features.clone()
    path = first._resolve_cache().split_path("dev")
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 512] = bytes(512)  # zeroed in place: same size, same name
    path.write_bytes(bytes(data))
    damaged = _module(corpus, tmp_path / "cache")
    damaged.prepare_data()  # sizes match: not recomputed here
    with caplog.at_level("WARNING"):
        damaged.setup("fit")
    assert f"feature cache file {path} is damaged" in caplog.text
    assert "recomputing the 'dev' split" in caplog.text
    assert torch.equal(damaged.datasets["dev"].features, original)
    _forbid_features(monkeypatch)  # repaired for good: the next process just loads it
    again = _module(corpus, tmp_path / "cache")
    again.setup("fit")
    assert torch.equal(again.datasets["dev"].features, original)


def test_a_full_disk_while_caching_is_a_clear_error(
    corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    import mohaq.datamodules.feature_cache as cache_module

    def full(source: str, target: str) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(cache_module.os, "replace", full)
    with pytest.raises(FeatureCacheError, match=r"cannot write the feature cache file .*train\.pt: No space left on device .*--data.cache_dir"):  # fmt: skip
        _module(corpus, tmp_path / "cache").prepare_data()
    monkeypatch.undo()
    cache = _module(corpus, tmp_path / "cache")
    cache.prepare_data()  # nothing half-written was trusted
    cache.setup("fit")


def test_a_repaired_synthetic_corpus_gets_a_new_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repairs: list[Path] = []

    def generate_corpus(out_dir: Path, **kwargs: object) -> None:
        write_small_corpus(Path(out_dir))
        (Path(out_dir) / "corpus.json").write_text("{}")

    def verify_corpus(out: Path, **kwargs: object) -> list[str]:
        if repairs:
            return []
        repairs.append(out)  # as if a damaged speaker was generated again
        phn = Path(out) / "TRAIN/DR1/FCJF0/SI1.PHN"
        os.utime(phn, ns=(phn.stat().st_atime_ns, phn.stat().st_mtime_ns + 10**9))
        return ["TRAIN/DR1/FCJF0/SI1.PHN"]

    fake = types.ModuleType("mohaq.datamodules.synth_timit")
    fake.generate_corpus, fake.verify_corpus = generate_corpus, verify_corpus
    monkeypatch.setitem(sys.modules, "mohaq.datamodules.synth_timit", fake)
    data = TIMITDataModule(cache_dir=str(tmp_path), synthetic_speakers=6)
    data.prepare_data()
    assert len(repairs) == 1
    # The cache was computed for the repaired files: the next process finds it complete.
    _forbid_features(monkeypatch)
    again = TIMITDataModule(cache_dir=str(tmp_path), synthetic_speakers=6)
    again.prepare_data()
    again.setup("fit")


# -- errors surface in prepare_data, before any feature is computed --------------------------------
@pytest.mark.parametrize(
    "phn_text, message",
    [
        ("0 4000 h#\n4000 8000 xx\n", r"MDDD0/SI9\.PHN' line 2: unknown phone symbol 'xx'"),
        ("0 4000 h#\n4100 8000 iy\n", r"MDDD0/SI9\.PHN' line 2: segment starts at 4100"),
    ],
)
def test_bad_file_fails_prepare_before_feature_work(
    corpus: Path, tmp_path: Path, phn_text: str, message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The bad utterance sorts last, so a lazy reader would compute everything else first.
    write_utterance(corpus, "TEST", "DR2", "MDDD0", "SI9", phn_text=phn_text)
    _forbid_features(monkeypatch)
    with pytest.raises(CorpusError, match=message):
        _module(corpus, tmp_path / "cache").prepare_data()


def test_short_audio_and_missing_corpus_fail_in_prepare(corpus: Path, tmp_path: Path) -> None:
    write_utterance(corpus, "TEST", "DR2", "MDDD0", "SI9", seconds=0.02)
    with pytest.raises(
        CorpusError, match=r"SI9\.WAV' has 320 samples, fewer than one 400-sample frame"
    ):
        _module(corpus, tmp_path / "cache").prepare_data()
    with pytest.raises(CorpusError, match="does not exist"):
        _module(tmp_path / "missing", tmp_path / "cache").prepare_data()


# -- optimization set ---------------------------------------------------------------------------------
def test_optimization_set_is_a_fixed_subset_of_dev(corpus: Path, tmp_path: Path) -> None:
    data = _module(corpus, tmp_path / "cache", optimization_set_utterances=3, seed=5)
    data.prepare_data()
    data.setup("validate")
    chosen = data.optimization_dataset.utterance_ids
    assert len(chosen) == 3 and set(chosen) <= set(data.datasets["dev"].utterance_ids)
    same = _module(corpus, tmp_path / "cache", optimization_set_utterances=3, seed=5)
    assert same.optimization_dataset.utterance_ids == chosen  # loads dev lazily
    batches = list(data.optimization_dataloader())
    assert [b.utterance_ids[0] for b in batches] == chosen and all(
        len(b.lengths) == 1 for b in batches
    )
    assert len(list(data.optimization_dataloader(batch_size=2))) == 2
    everything = _module(corpus, tmp_path / "cache", optimization_set_utterances=100)
    assert len(everything.optimization_dataset) == 4  # all of dev when it is smaller
    with pytest.raises(ValueError, match="batch_size=0"):
        data.optimization_dataloader(batch_size=0)


# -- synthetic corpus ------------------------------------------------------------------------------------
def test_synthetic_corpus_is_generated_once_into_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[dict] = []

    def generate_corpus(out_dir: Path, **kwargs: object) -> None:
        calls.append(kwargs)
        write_small_corpus(Path(out_dir))
        (Path(out_dir) / "corpus.json").write_text("{}")

    fake = types.ModuleType("mohaq.datamodules.synth_timit")
    fake.generate_corpus = generate_corpus
    fake.verify_corpus = lambda out, **kwargs: []
    monkeypatch.setitem(sys.modules, "mohaq.datamodules.synth_timit", fake)
    data = TIMITDataModule(cache_dir=str(tmp_path), synthetic_speakers=6, synthetic_seed=3)
    data.prepare_data()
    root = data.corpus_root()
    assert root.parent == tmp_path / "synthetic" and (root / "corpus.json").is_file()
    assert calls == [{"speakers": 6, "utterances_per_speaker": 8, "seed": 3, "snr_db": (5.0, 20.0)}]
    assert not [p for p in root.parent.iterdir() if p.name.startswith(".tmp")]
    assert (root / "TRAIN").is_dir()
    TIMITDataModule(cache_dir=str(tmp_path), synthetic_speakers=6, synthetic_seed=3).prepare_data()
    assert len(calls) == 1
