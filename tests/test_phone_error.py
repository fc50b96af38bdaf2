from __future__ import annotations

import torch

from mohaq.datamodules.phones import IGNORE_INDEX, PHONES_39, PHONES_48, SCORING_MAP_48_TO_39
from mohaq.phone_error import PhoneErrorRate, collapse_repeats, frames_to_phone_strings


def test_collapse_repeats() -> None:
    assert collapse_repeats(torch.tensor([1, 1, 2, 2, 1, 3, 3])).tolist() == [1, 2, 1, 3]
    assert collapse_repeats(torch.tensor([], dtype=torch.long)).tolist() == []


def test_folding_and_ignored_frames_build_the_phone_strings() -> None:
    cl, vcl, sil = PHONES_48.index("cl"), PHONES_48.index("vcl"), PHONES_48.index("sil")
    aa, ao = PHONES_48.index("aa"), PHONES_48.index("ao")
    scoring = torch.tensor(SCORING_MAP_48_TO_39)
    # cl, vcl and sil all fold to sil; ao folds to aa; the ignored frame is dropped.
    predictions = torch.tensor([[cl, vcl, sil, ao, aa, 0]])
    targets = torch.tensor([[sil, sil, sil, aa, aa, IGNORE_INDEX]])
    hyp, ref = frames_to_phone_strings(predictions, targets, scoring, IGNORE_INDEX)
    expected = f"{PHONES_39.index('sil')} {PHONES_39.index('aa')}"
    assert hyp == [expected] and ref == [expected]


def test_per_is_corpus_level_edits_over_reference_length() -> None:
    metric = PhoneErrorRate(list(range(4)))
    # Utterance 1: ref 0 1 2, hyp 0 1 3 -> 1 substitution.
    metric.update(torch.tensor([[0, 1, 1, 3]]), torch.tensor([[0, 1, 1, 2]]))
    # Utterance 2: ref 0 1 2 3 0, hyp 0 2 3 0 -> 1 deletion.
    metric.update(torch.tensor([[0, 2, 3, 0, 0]]), torch.tensor([[0, 1, 2, 3, 0]]))
    # 2 errors over 3 + 5 reference phones (not the mean of per-utterance rates).
    assert abs(metric.compute().item() - 2 / 8) < 1e-6


def test_per_accepts_logits() -> None:
    metric = PhoneErrorRate(list(range(3)))
    logits = torch.zeros(1, 3, 3)
    logits[0, torch.arange(3), torch.tensor([2, 2, 1])] = 1.0
    metric.update(logits, torch.tensor([[2, 2, 0]]))
    assert abs(metric.compute().item() - 0.5) < 1e-6


def test_batched_edit_distances_equal_the_dynamic_program_one_pair_at_a_time() -> None:
    import random

    from mohaq.phone_error import batch_edit_distances, edit_distance

    rng = random.Random(0)
    hypotheses = [[rng.randrange(4) for _ in range(rng.randrange(0, 12))] for _ in range(200)]
    references = [[rng.randrange(4) for _ in range(rng.randrange(1, 12))] for _ in range(200)]
    hypotheses[0], references[0] = [], [1, 2]  # all deletions
    hypotheses[1], references[1] = [3, 3, 3], [3]  # insertions
    expected = [edit_distance(h, r) for h, r in zip(hypotheses, references, strict=True)]
    assert batch_edit_distances(hypotheses, references) == expected
    assert expected[0] == 2 and expected[1] == 2
    assert batch_edit_distances([], []) == []


def test_per_equals_torchmetrics_word_error_rate_on_the_phone_strings() -> None:
    from torchmetrics.text import WordErrorRate

    torch.manual_seed(0)
    scoring = torch.tensor(SCORING_MAP_48_TO_39)
    ours, reference = PhoneErrorRate(SCORING_MAP_48_TO_39), WordErrorRate()
    for _ in range(3):
        predictions = torch.randint(0, 48, (5, 40))
        targets = torch.randint(0, 48, (5, 40)).repeat_interleave(2, dim=1)[:, :40]
        targets[0, 30:] = IGNORE_INDEX
        targets[1] = IGNORE_INDEX  # an empty reference is left out by both
        ours.update(predictions, targets)
        hyp, ref = frames_to_phone_strings(predictions, targets, scoring, IGNORE_INDEX)
        reference.update([h for h, r in zip(hyp, ref, strict=True) if r], [r for r in ref if r])
    assert ours.compute().item() == reference.compute().item()
