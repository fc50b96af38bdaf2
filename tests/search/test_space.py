import numpy as np
import pytest
from test_search_fakes import fake_workload

from mohaq.quant.assignment import BitAssignment
from mohaq.search.space import SearchSpace, SearchSpaceError


def test_per_point_genes_encode_decode_roundtrip() -> None:
    workload = fake_workload()
    space = SearchSpace(workload, (2, 4, 8, 16))
    assert space.num_genes == 8 and space.size == 4**8
    genes = (0, 1, 2, 3, 3, 2, 1, 0)
    assignment = space.decode(genes)
    assert list(assignment.bits.values()) == [2, 4, 8, 16, 16, 8, 4, 2]
    assert space.encode(assignment) == genes


def test_decode_rounds_and_clips_optimizer_values() -> None:
    space = SearchSpace(fake_workload(1), (4, 8, 16))
    assert space.genes_from_value(np.array([2.5, -0.5])) == (2, 0)
    assert space.decode([0.4, 1.6]).to_dict() == {"l0.input": 4, "l0.weight": 16}


def test_shared_layer_precision_pairs_weight_with_input() -> None:
    workload = fake_workload()
    space = SearchSpace(workload, None, allowed_bits=(4, 8, 16), shared_layer_precision=True)
    assert space.num_genes == 4 and space.choices == (4, 8, 16)
    assert space.genes[1].name == "l1" and space.genes[1].points == ("l1.input", "l1.weight")
    assignment = space.decode((0, 1, 2, 0))
    assert assignment.bits["l1.input"] == assignment.bits["l1.weight"] == 8
    broken = dict(assignment.to_dict(), **{"l1.input": 4})
    with pytest.raises(SearchSpaceError, match="share one precision"):
        space.encode(BitAssignment(broken))


def test_bit_choice_the_platform_cannot_run_lists_allowed() -> None:
    with pytest.raises(
        SearchSpaceError, match=r"\[2\] are not supported.*allowed bits: \[4, 8, 16\]"
    ):
        SearchSpace(fake_workload(), (2, 4), allowed_bits=(4, 8, 16))
