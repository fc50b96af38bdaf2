"""A small GRU keyword spotter: the second shipped task (see
:mod:`mohaq.datamodules.keywords` for its synthetic corpus).

The model is written as a user would write it, with ``torch.nn.GRU`` and
``torch.nn.Linear``: a (stacked) GRU over log-mel frames and a linear
classifier on the last layer's final hidden state. A precision search converts
it with :func:`mohaq.convert.make_quantizable` and scores it with
:class:`mohaq.search.MetricEvaluator` (accuracy over all clips: error =
1 - accuracy).

Training from the command line (LightningCLI)::

    python -m mohaq.tasks.keyword_spotting fit -c lightning_configs/kws_gru.yaml
"""

from __future__ import annotations

import pytorch_lightning as pl
import torch
import torchmetrics
from torch import Tensor, nn

#: The metric a search on this task scores, with its arguments but the class count.
ACCURACY = "torchmetrics.classification.MulticlassAccuracy"


class KeywordSpotter(pl.LightningModule):
    """GRU keyword classifier on log-mel frames.

    Args:
        num_features: log-mel channels per frame (from the DataModule).
        num_classes: labels (keywords + unknown + silence; from the DataModule).
        hidden_size: GRU units.
        num_layers: stacked GRU layers.
        dropout: between GRU layers (torch's ``dropout``) and before the classifier.
        learning_rate: Adam's learning rate.

    Raises:
        ValueError: naming the argument, the value and what is allowed.
    """

    def __init__(
        self,
        num_features: int = 40,
        num_classes: int = 12,
        *,
        hidden_size: int = 64,
        num_layers: int = 1,
        dropout: float = 0.1,
        learning_rate: float = 3e-3,
    ) -> None:
        super().__init__()
        for name, value, low in (
            ("num_features", num_features, 1), ("num_classes", num_classes, 2),
            ("hidden_size", hidden_size, 1), ("num_layers", num_layers, 1),
        ):  # fmt: skip
            if value < low:
                raise ValueError(f"{name} must be >= {low}, got {value}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.save_hyperparameters()
        self.gru = nn.GRU(num_features, hidden_size, num_layers, batch_first=True,
                          dropout=dropout if num_layers > 1 else 0.0)  # fmt: skip
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden_size, num_classes)
        self.val_accuracy = torchmetrics.classification.MulticlassAccuracy(
            num_classes, average="micro"
        )
        self.test_accuracy = self.val_accuracy.clone()

    def forward(self, features: Tensor) -> Tensor:
        """``(B, T, num_features)`` -> logits ``(B, num_classes)``."""
        _, hidden = self.gru(features)
        return self.classifier(self.dropout(hidden[-1]))

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        features, labels = batch
        loss = nn.functional.cross_entropy(self(features), labels)
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        features, labels = batch
        self.val_accuracy(self(features), labels)
        self.log("val_accuracy", self.val_accuracy, prog_bar=True)

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        features, labels = batch
        self.test_accuracy(self(features), labels)
        self.log("test_accuracy", self.test_accuracy)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.hparams.learning_rate)


def main(args: list[str] | None = None) -> None:
    """LightningCLI over :class:`KeywordSpotter` and the keyword DataModule."""
    from pytorch_lightning.cli import LightningCLI

    from mohaq.datamodules.keywords import KeywordDataModule

    class _CLI(LightningCLI):
        def add_arguments_to_parser(self, parser) -> None:  # type: ignore[no-untyped-def]
            parser.link_arguments("data.num_classes", "model.num_classes", apply_on="instantiate")
            parser.link_arguments("data.num_features", "model.num_features", apply_on="instantiate")

    _CLI(KeywordSpotter, KeywordDataModule, args=args)


if __name__ == "__main__":
    main()
