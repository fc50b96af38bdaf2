import pytest

from mohaq.search.pareto import (
    ParetoArchive,
    dominates,
    hypervolume,
    non_dominated_sort,
    pareto_indices,
)

POINTS = [[1, 5], [2, 3], [3, 4], [4, 1], [2, 3], [5, 5]]


def test_dominance_and_sorting_by_hand() -> None:
    assert dominates([1, 1], [1, 2]) and not dominates([1, 2], [1, 2])
    assert not dominates([1, 3], [2, 1])
    # [3,4] is dominated by [2,3]; [5,5] by everything else.
    assert non_dominated_sort(POINTS) == [[0, 1, 3, 4], [2], [5]]
    assert pareto_indices(POINTS) == [0, 1, 3]  # the repeated [2, 3] is kept once


def test_hypervolume_by_hand() -> None:
    # Union of [1,4]x[2,4] and [2,4]x[1,4] = 6 + 6 - 4.
    assert hypervolume([[1, 2], [2, 1]], [4, 4]) == pytest.approx(8.0)
    # Points on or beyond the reference add nothing.
    assert hypervolume([[1, 2], [4, 0], [5, 5]], [4, 4]) == pytest.approx(6.0)
    assert hypervolume([], [4, 4]) == 0.0


def test_archive_keeps_the_front_one_item_at_a_time() -> None:
    archive: ParetoArchive[list[int]] = ParetoArchive(lambda p: p)
    entered = [archive.add(p) for p in POINTS]
    # [3,4] and [5,5] are dominated when they arrive; the second [2,3] repeats one.
    assert entered == [True, True, False, True, False, False]
    assert sorted(map(tuple, archive.items())) == [(1, 5), (2, 3), (4, 1)]
    assert archive.add([1, 1]) and archive.items() == [[1, 1]]
    assert archive.hypervolume([4, 4]) == pytest.approx(9.0)
