"""Phone error rate from frame-level predictions.

Frame posteriors are turned into a phone string the usual way for framewise
TIMIT models without a decoder: take the best class per frame, fold it to the
39-phone scoring set, drop frames the reference ignores (padding, `q`), and
collapse runs of the same phone. The reference string is built the same way
from the frame targets. The edit distance between the two strings, summed over
the corpus and divided by the reference length, is the PER; torchmetrics'
WordErrorRate computes exactly that on space-joined phone tokens. The edit
distances are computed here, a batch of utterances at once in numpy (a search
scores every candidate: torchmetrics' per-token Python loop cost as much as
the quantized forward pass); the metric's states and ``compute`` are
WordErrorRate's.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
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


def frames_to_phone_indices(
    predictions: Tensor,
    targets: Tensor,
    scoring_map: Tensor,
    ignore_index: int,
) -> tuple[list[Tensor], list[Tensor]]:
    """As :func:`frames_to_phone_strings`, the phones as 1-D index tensors."""
    hypotheses, references = [], []
    for prediction, target in zip(predictions, targets, strict=True):
        scored = target != ignore_index
        hypotheses.append(collapse_repeats(scoring_map[prediction[scored]]))
        references.append(collapse_repeats(scoring_map[target[scored]]))
    return hypotheses, references


def batch_edit_distances(
    hypotheses: Sequence[Sequence[int]], references: Sequence[Sequence[int]]
) -> list[int]:
    """Levenshtein distances of pairs of integer sequences, all pairs at once.

    One dynamic-programming row per hypothesis token, for every pair together
    (padded: a cell depends only on cells above and to its left, so padding
    never reaches the cell read for a pair). Insertions along a row are a
    running minimum: ``row[j] = j + min_{k <= j}(a[k] - k)``.
    """
    count = len(hypotheses)
    if count == 0:
        return []
    hyp_lengths = np.asarray([len(h) for h in hypotheses])
    ref_lengths = np.asarray([len(r) for r in references])
    width = int(ref_lengths.max()) + 1
    hyp = np.full((count, max(int(hyp_lengths.max()), 1)), -1, dtype=np.int64)
    ref = np.full((count, width - 1), -2, dtype=np.int64)
    for b in range(count):
        hyp[b, : hyp_lengths[b]] = np.asarray(hypotheses[b], dtype=np.int64)
        ref[b, : ref_lengths[b]] = np.asarray(references[b], dtype=np.int64)
    columns = np.arange(width)
    rows = np.arange(count)
    previous = np.broadcast_to(columns, (count, width)).copy()
    result = previous[rows, ref_lengths].copy()  # empty hypotheses: all deletions
    for i in range(1, int(hyp_lengths.max()) + 1):
        current = np.empty_like(previous)
        current[:, 0] = i
        substitute = previous[:, :-1] + (ref != hyp[:, i - 1 : i])
        current[:, 1:] = np.minimum(previous[:, 1:] + 1, substitute)
        current = np.minimum.accumulate(current - columns, axis=1) + columns
        done = hyp_lengths == i
        result[done] = current[done, ref_lengths[done]]
        previous = current
    return [int(x) for x in result]


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
    hypotheses, references = frames_to_phone_indices(
        predictions, targets, scoring_map, ignore_index
    )
    return (
        [" ".join(map(str, h.tolist())) for h in hypotheses],
        [" ".join(map(str, r.tolist())) for r in references],
    )


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
        counts = utterance_errors(predictions, targets, self.scoring_map, self.ignore_index)
        # WordErrorRate's states, so its compute (and sync) are unchanged.
        self.errors += sum(e for e, _ in counts)
        self.total += sum(n for _, n in counts)


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
    hypotheses, references = frames_to_phone_indices(
        predictions.cpu(), targets.cpu(), scoring_map.cpu(), ignore_index
    )
    # An utterance whose frames are all unscored has an empty reference;
    # WordErrorRate would count its insertions against nothing: it is left out.
    pairs = [
        (h.tolist(), r.tolist()) for h, r in zip(hypotheses, references, strict=True) if len(r)
    ]
    distances = batch_edit_distances([h for h, _ in pairs], [r for _, r in pairs])
    return [(d, len(r)) for d, (_, r) in zip(distances, pairs, strict=True)]
