"""Phone error rate from frame-level predictions.

Frame posteriors are turned into a phone string the usual way for framewise
TIMIT models without a decoder: take the best class per frame, fold it to the
39-phone scoring set, drop frames the reference ignores (padding, `q`), and
collapse runs of the same phone. The reference string is built the same way
from the frame targets. The edit distance between the two strings, summed over
the corpus and divided by the reference length, is the PER; torchmetrics'
WordErrorRate computes exactly that on space-joined phone tokens.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torchmetrics.text import WordErrorRate


def collapse_repeats(indices: Tensor) -> Tensor:
    """Removes consecutive duplicates from a 1-D tensor: [1, 1, 2, 2, 1] -> [1, 2, 1]."""
    if indices.numel() == 0:
        return indices
    keep = torch.ones_like(indices, dtype=torch.bool)
    keep[1:] = indices[1:] != indices[:-1]
    return indices[keep]


def frames_to_phone_strings(
    predictions: Tensor,
    targets: Tensor,
    scoring_map: Tensor,
    ignore_index: int,
) -> tuple[list[str], list[str]]:
    """Builds hypothesis and reference phone strings for a batch.

    Args:
        predictions: (B, T) predicted class indices.
        targets: (B, T) target class indices, ``ignore_index`` where unscored.
        scoring_map: (C,) class index -> scoring index (48 -> 39 phones).
        ignore_index: the target value of unscored frames.

    Returns:
        (hypotheses, references): one space-joined string of scoring indices per utterance.
    """
    hypotheses, references = [], []
    for prediction, target in zip(predictions, targets, strict=True):
        scored = target != ignore_index
        hypothesis = collapse_repeats(scoring_map[prediction[scored]])
        reference = collapse_repeats(scoring_map[target[scored]])
        hypotheses.append(" ".join(map(str, hypothesis.tolist())))
        references.append(" ".join(map(str, reference.tolist())))
    return hypotheses, references


class PhoneErrorRate(WordErrorRate):
    """Corpus-level PER over frame predictions folded to the scoring phone set.

    Args:
        scoring_map: class index -> scoring index (e.g. 48 -> 39 phones).
        ignore_index: target value of frames that are not scored.
    """

    def __init__(self, scoring_map: Sequence[int], ignore_index: int = -100) -> None:
        super().__init__()
        if len(scoring_map) == 0:
            raise ValueError("scoring_map must map at least one class")
        self.ignore_index = ignore_index
        self.register_buffer(
            "scoring_map", torch.as_tensor(list(scoring_map), dtype=torch.long), persistent=False
        )

    def update(self, logits_or_predictions: Tensor, targets: Tensor) -> None:  # type: ignore[override]
        predictions = (
            logits_or_predictions.argmax(dim=-1)
            if logits_or_predictions.dim() == 3
            else logits_or_predictions
        )
        hypotheses, references = frames_to_phone_strings(
            predictions.cpu(), targets.cpu(), self.scoring_map.cpu(), self.ignore_index
        )
        # An utterance whose frames are all unscored has an empty reference;
        # WordErrorRate would count its insertions against nothing: skip it.
        pairs = [(h, r) for h, r in zip(hypotheses, references, strict=True) if r]
        if pairs:
            super().update([h for h, _ in pairs], [r for _, r in pairs])


def edit_distance(hypothesis: Sequence[str], reference: Sequence[str]) -> int:
    """Levenshtein distance between two token sequences (substitutions,
    insertions and deletions cost 1), as WordErrorRate counts errors."""
    previous = list(range(len(reference) + 1))
    for i, token in enumerate(hypothesis, start=1):
        current = [i] + [0] * len(reference)
        for j, wanted in enumerate(reference, start=1):
            current[j] = min(
                previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (token != wanted)
            )
        previous = current
    return previous[-1]


def utterance_errors(
    logits_or_predictions: Tensor, targets: Tensor, scoring_map: Tensor, ignore_index: int
) -> list[tuple[int, int]]:
    """``(phone errors, reference phones)`` per utterance of a batch, the terms
    whose sums over a corpus give :class:`PhoneErrorRate` (utterances with an
    empty reference are left out, as there)."""
    predictions = (
        logits_or_predictions.argmax(dim=-1)
        if logits_or_predictions.dim() == 3
        else logits_or_predictions
    )
    hypotheses, references = frames_to_phone_strings(
        predictions.cpu(), targets.cpu(), scoring_map.cpu(), ignore_index
    )
    counts = []
    for hypothesis, reference in zip(hypotheses, references, strict=True):
        if reference:
            tokens = reference.split()
            counts.append((edit_distance(hypothesis.split(), tokens), len(tokens)))
    return counts
