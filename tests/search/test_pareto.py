import numpy as np
import pytest

from mohaq.search.optimizers import NSGA2
from mohaq.search.pareto import (
    crowding_distance,
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


def test_crowding_distance_by_hand() -> None:
    distance = crowding_distance([[1, 5], [2, 3], [4, 1]])
    # middle point: (4-1)/(4-1) + (5-1)/(5-1) = 2
    assert np.isinf(distance[0]) and np.isinf(distance[2]) and distance[1] == pytest.approx(2.0)


def test_hypervolume_by_hand() -> None:
    # Union of [1,4]x[2,4] and [2,4]x[1,4] = 6 + 6 - 4.
    assert hypervolume([[1, 2], [2, 1]], [4, 4]) == pytest.approx(8.0)
    # Points on or beyond the reference add nothing.
    assert hypervolume([[1, 2], [4, 0], [5, 5]], [4, 4]) == pytest.approx(6.0)
    assert hypervolume([], [4, 4]) == 0.0


def test_nsga2_constraint_domination_prefers_feasible() -> None:
    nsga = NSGA2(2, 4, population_size=2, offspring=1, seed=0)
    nsga.tell_not_asked((0, 0), [9.0, 9.0], violation=0.0)
    nsga.tell_not_asked((1, 1), [0.0, 0.0], violation=1.0)
    assert nsga.initialized
    assert [r["genes"] for r in nsga.population] == [[0, 0], [1, 1]]


def test_nsga2_state_roundtrip_continues_identically() -> None:
    a = NSGA2(5, 4, population_size=6, offspring=2, seed=3)
    for _ in range(8):
        genes, _ = a.ask()
        a.tell(genes, [sum(genes), -max(genes)])
    b = NSGA2(5, 4, population_size=6, offspring=2, seed=99)
    b.load_state_bytes(a.state_bytes())
    assert [a.ask()[0] for _ in range(4)] == [b.ask()[0] for _ in range(4)]
