"""The LightningModule that trains and scores a recurrent acoustic model.

Following Asteroid's split, the network is a plain `AcousticModel` that can
rebuild itself from its arguments; this module only adds the loss, the metrics,
the optimizer and checkpointing of the current bit assignment.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.classification import MulticlassAccuracy

from mohaq.datamodules.phones import IGNORE_INDEX, SCORING_MAP_48_TO_39
from mohaq.models.acoustic import AcousticModel
from mohaq.phone_error import PhoneErrorRate
from mohaq.quant.apply import apply_bit_assignment, current_bit_assignment
from mohaq.quant.assignment import BitAssignment
from mohaq.quant.points import Workload

BIT_ASSIGNMENT_KEY = "mohaq_bit_assignment"


def _reset_outside_inference_mode(*metrics: Metric) -> None:
    # A reset inside `trainer.validate`'s inference mode would leave inference
    # tensors as metric states, which a later fit (validating under no_grad)
    # cannot update in place.
    with torch.inference_mode(False):
        for metric in metrics:
            metric.reset()


class AcousticSystem(pl.LightningModule):
    """Framewise phone classifier over stacked recurrent layers.

    Args:
        num_features: input feature dimension (linked from the DataModule).
        num_classes: output classes (linked from the DataModule: 48 phones).
        scoring_map: class -> scoring class (48 -> 39 phones), for the PER.
        cell: recurrent cell type.
        hidden_size: hidden units per direction.
        num_layers: recurrent layers.
        bidirectional: run each layer in both directions.
        projection_size: size of the projection in front of layers 1..N-1 (None: none).
        dropout: dropout between layers.
        highway_bias: SRU highway gate bias initialisation.
        granularity: quantization points per layer (MOHAQ) or per operator.
        weight_clipping: clipping method of weight quantizers.
        activation_clipping: clipping method of activation quantizers.
        learning_rate: Adam's learning rate.
        lr_halving_threshold: halve the learning rate when the validation PER
            improves by less than this (absolute), as in the MOHAQ recipe.
        weight_decay: Adam's weight decay.
    """

    def __init__(
        self,
        *,
        num_features: int = 23,
        num_classes: int = 48,
        scoring_map: Sequence[int] | None = None,
        cell: Literal["sru", "gru", "lstm"] = "sru",
        hidden_size: int = 550,
        num_layers: int = 4,
        bidirectional: bool = True,
        projection_size: int | None = 256,
        dropout: float = 0.1,
        highway_bias: float = -1.0,
        granularity: Literal["layer", "operator"] = "layer",
        weight_clipping: Literal["minmax", "mmse", "percentile"] = "mmse",
        activation_clipping: Literal["minmax", "mmse", "percentile"] = "mmse",
        learning_rate: float = 1e-3,
        lr_halving_threshold: float = 0.001,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__()
        if learning_rate <= 0:
            raise ValueError(f"learning_rate must be > 0, got {learning_rate}")
        if lr_halving_threshold < 0:
            raise ValueError(f"lr_halving_threshold must be >= 0, got {lr_halving_threshold}")
        if scoring_map is None:
            scoring_map = SCORING_MAP_48_TO_39 if num_classes == 48 else range(num_classes)
        scoring_map = [int(index) for index in scoring_map]
        if len(scoring_map) != num_classes:
            raise ValueError(
                f"scoring_map has {len(scoring_map)} entries but num_classes is {num_classes}; "
                "it must map every class"
            )
        self.save_hyperparameters()
        self.model = AcousticModel(
            num_features=num_features,
            num_classes=num_classes,
            cell=cell,
            hidden_size=hidden_size,
            num_layers=num_layers,
            bidirectional=bidirectional,
            projection_size=projection_size,
            dropout=dropout,
            highway_bias=highway_bias,
            granularity=granularity,
            weight_clipping=weight_clipping,
            activation_clipping=activation_clipping,
        )
        num_scoring = max(scoring_map) + 1
        self.val_per = PhoneErrorRate(scoring_map, IGNORE_INDEX)
        self.test_per = PhoneErrorRate(scoring_map, IGNORE_INDEX)
        self.val_frame_accuracy = MulticlassAccuracy(
            num_classes=num_scoring, average="micro", ignore_index=IGNORE_INDEX
        )
        self.test_frame_accuracy = self.val_frame_accuracy.clone()
        self.register_buffer(
            "scoring_map", torch.as_tensor(scoring_map, dtype=torch.long), persistent=False
        )

    # -- quantization ---------------------------------------------------------------
    def workload(self) -> Workload:
        """The model's quantization points and fixed-precision extras."""
        return self.model.workload()

    @property
    def bit_assignment(self) -> BitAssignment:
        """The bit assignment currently applied (empty: float)."""
        return current_bit_assignment(self.model)

    def apply_bit_assignment(self, assignment: BitAssignment, fixed_bits: int | None = 16) -> None:
        apply_bit_assignment(self.model, assignment, fixed_bits=fixed_bits)

    # -- forward and steps -------------------------------------------------------------
    def forward(self, features: Tensor, lengths: Tensor) -> Tensor:
        return self.model(features, lengths)

    def stages(self) -> list[tuple[tuple[str, ...], Any]]:
        """The model's forward as a chain of stages (see ``AcousticModel.stages``)."""
        return self.model.stages()

    def _loss(self, logits: Tensor, targets: Tensor) -> Tensor:
        return F.cross_entropy(logits.transpose(1, 2), targets, ignore_index=IGNORE_INDEX)

    def _scoring_targets(self, targets: Tensor) -> Tensor:
        scored = targets != IGNORE_INDEX
        folded = self.scoring_map[targets.clamp(min=0)]
        return torch.where(scored, folded, torch.full_like(folded, IGNORE_INDEX))

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        features, targets, lengths = batch[0], batch[1], batch[2]
        loss = self._loss(self(features, lengths), targets)
        self.log("train/loss", loss, prog_bar=True, batch_size=features.shape[0])
        return loss

    def _evaluate(self, batch: Any, stage: str) -> Tensor:
        features, targets, lengths = batch[0], batch[1], batch[2]
        logits = self(features, lengths)
        loss = self._loss(logits, targets)
        per = self.val_per if stage == "val" else self.test_per
        accuracy = self.val_frame_accuracy if stage == "val" else self.test_frame_accuracy
        per.update(logits, targets)
        predictions = self.scoring_map[logits.argmax(dim=-1)]
        accuracy.update(predictions, self._scoring_targets(targets))
        batch_size = features.shape[0]
        self.log(f"{stage}/loss", loss, batch_size=batch_size)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> Tensor:
        return self._evaluate(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> Tensor:
        return self._evaluate(batch, "test")

    def on_validation_epoch_end(self) -> None:
        per = self.val_per.compute()
        self.log("val/per", per, prog_bar=True)
        self.log("val/fer", 1.0 - self.val_frame_accuracy.compute())
        # TensorBoard's HParams view shows hp_metric: the run's latest PER, not Lightning's -1.
        self.log("hp_metric", per)
        _reset_outside_inference_mode(self.val_per, self.val_frame_accuracy)

    def on_test_epoch_end(self) -> None:
        per = self.test_per.compute()
        self.log("test/per", per)
        self.log("test/fer", 1.0 - self.test_frame_accuracy.compute())
        self.log("hp_metric", per)
        _reset_outside_inference_mode(self.test_per, self.test_frame_accuracy)

    # -- optimisation --------------------------------------------------------------------
    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = torch.optim.Adam(
            self.parameters(),
            lr=self.hparams.learning_rate,
            weight_decay=self.hparams.weight_decay,
        )
        # MOHAQ's recipe: halve the rate when validation improves by less than the threshold.
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer,
            mode="min",
            factor=0.5,
            patience=0,
            threshold=self.hparams.lr_halving_threshold,
            threshold_mode="abs",
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "monitor": "val/per", "interval": "epoch"},
        }

    # -- checkpoints ---------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[BIT_ASSIGNMENT_KEY] = self.bit_assignment.to_dict()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # The assignment must be applied before the state dict is loaded, so the
        # quantizers that hold calibration state exist in the right mode.
        stored = checkpoint.get(BIT_ASSIGNMENT_KEY)
        if stored:
            self.apply_bit_assignment(BitAssignment.from_dict(stored))
