"""The synthetic keyword corpus (libespeak-ng from the espeakng-loader wheel),
its DataModule and the GRU keyword spotter, at a few speakers."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch

from mohaq.convert import make_quantizable, model_workload
from mohaq.datamodules.keywords import (
    KeywordCorpusError,
    KeywordCorpusSpec,
    KeywordDataModule,
    generate_in_fresh_process,
    generate_keyword_corpus,
    speakers_of,
)
from mohaq.quant import BitAssignment
from mohaq.search import MetricEvaluator
from mohaq.tasks.keyword_spotting import ACCURACY, KeywordSpotter, main

CONFIG = Path(__file__).resolve().parents[2] / "lightning_configs" / "kws_gru.yaml"
TINY = KeywordCorpusSpec(keywords=("yes", "no"), unknown_words=("cat", "dog"), speakers=3,
                         repetitions=2, unknown_clips=1, silence_clips=1)  # fmt: skip


def test_spec_is_validated_naming_what_is_allowed() -> None:
    with pytest.raises(KeywordCorpusError, match=r"speakers must be >= 3"):
        KeywordCorpusSpec(speakers=2)
    with pytest.raises(KeywordCorpusError, match=r"not among unknown_words; repeated: \['yes'\]"):
        KeywordCorpusSpec(keywords=("yes",), unknown_words=("yes", "cat"))
    with pytest.raises(KeywordCorpusError, match=r"snr_db must be \(low, high\)"):
        KeywordCorpusSpec(snr_db=(20.0, 5.0))
    assert KeywordCorpusSpec().labels[-2:] == ("unknown", "silence")
    assert KeywordCorpusSpec.from_dict(TINY.to_dict()) == TINY


def test_speakers_are_split_without_sharing_voices_and_vary() -> None:
    speakers = speakers_of(KeywordCorpusSpec(speakers=40))
    assert [s.split for s in speakers].count("test") == 6
    assert [s.split for s in speakers].count("val") == 6
    assert len({s.voice for s in speakers}) > 15  # accents x variants
    assert speakers == speakers_of(KeywordCorpusSpec(speakers=40))


def test_corpus_files_labels_and_clips(tmp_path) -> None:
    counts = generate_keyword_corpus(tmp_path, TINY)
    per_speaker = 2 * 2 + 1 + 1  # two keywords twice, one unknown, one silence
    assert counts == {"train": per_speaker, "val": per_speaker, "test": per_speaker}
    train = np.load(tmp_path / "train.npz")
    assert train["audio"].shape == (per_speaker, 16_000) and train["audio"].dtype == np.int16
    assert sorted(train["labels"].tolist()) == [0, 0, 1, 1, 2, 3]
    assert set(train["speakers"].tolist()) == {0}
    loudness = np.abs(train["audio"].astype(float)).max(axis=1)
    assert (loudness > 0).all()  # silence clips hold noise, not zeros


def test_fresh_process_generation_is_deterministic(tmp_path) -> None:
    for folder in ("a", "b"):
        generate_in_fresh_process(tmp_path / folder, TINY)
    first, second = (np.load(tmp_path / f / "val.npz") for f in ("a", "b"))
    assert np.array_equal(first["audio"], second["audio"])
    assert np.array_equal(first["labels"], second["labels"])


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("keywords")
    KeywordDataModule(str(folder), speakers=3, repetitions=1).prepare_data()
    return str(folder)


def test_datamodule_batches_and_hooks(corpus) -> None:
    data = KeywordDataModule(corpus, speakers=3, repetitions=1, batch_size=8)
    data.prepare_data()  # a corpus of the same spec is kept
    data.setup("fit")
    features, labels = next(iter(data.train_dataloader()))
    assert features.shape == (8, 98, 40) and labels.dtype == torch.int64
    assert data.num_classes == 12 and data.num_features == 40
    train = torch.cat([batch[0] for batch in data.train_dataloader()])
    assert abs(float(train.mean())) < 1e-3  # normalized on the training set
    assert data.split_sizes() == {"train": 17, "val": 17, "test": 17}  # 10 + 4 unknown + 3 silence
    assert len(data.optimization_dataloader().dataset) == len(data.val_dataloader().dataset)
    with pytest.raises(KeywordCorpusError, match="another spec"):
        KeywordDataModule(corpus, speakers=3, repetitions=2).prepare_data()


def test_spotter_trains_converts_and_is_scored(corpus) -> None:
    torch.manual_seed(0)
    data = KeywordDataModule(corpus, speakers=3, repetitions=1, batch_size=16)
    model = KeywordSpotter(data.num_features, data.num_classes, hidden_size=16, num_layers=2)
    pl.Trainer(fast_dev_run=2, logger=False, enable_progress_bar=False).fit(model, data)
    model.eval()
    converted = make_quantizable(copy.deepcopy(model), granularity="operator")
    features = next(iter(data.val_dataloader()))[0]
    torch.testing.assert_close(converted(features), model(features), rtol=1e-5, atol=1e-5)
    evaluator = MetricEvaluator(converted, data, metric=ACCURACY, device="cpu",
                                metric_args={"num_classes": 12, "average": "micro"})  # fmt: skip
    names = model_workload(converted).names
    assert "gru.l1.w_hh" in names and "classifier.weight" in names
    result = evaluator.evaluate(BitAssignment.uniform(names, 8))
    assert 0.0 <= result.error <= 1.0


def test_spotter_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="hidden_size must be >= 1, got 0"):
        KeywordSpotter(hidden_size=0)
    with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\)"):
        KeywordSpotter(dropout=1.0)


def test_lightning_cli_trains_from_the_shipped_config(corpus, tmp_path) -> None:
    main(["fit", "-c", str(CONFIG), "--data.corpus_dir", corpus,
          "--data.speakers", "3", "--data.repetitions", "1", "--trainer.fast_dev_run", "1",
          "--trainer.default_root_dir", str(tmp_path)])  # fmt: skip
