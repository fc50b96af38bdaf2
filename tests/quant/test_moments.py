from __future__ import annotations

import pytest
import torch

from mohaq.quant.moments import InputMoments, recording_inputs
from mohaq.quant.quantizer import FakeQuantizer


def test_moments_over_every_frame_of_every_call() -> None:
    moments = InputMoments()
    moments.update(torch.tensor([[[1.0, 2.0], [3.0, 4.0]]]))  # (1, 2, 2): two frames
    moments.update(torch.tensor([[5.0, 6.0]]))
    assert moments.count == 3
    torch.testing.assert_close(moments.mean(), torch.tensor([3.0, 4.0], dtype=torch.float64))
    expected = torch.tensor([[35.0, 44.0], [44.0, 56.0]], dtype=torch.float64) / 3
    torch.testing.assert_close(moments.second_moment(), expected)
    with pytest.raises(RuntimeError, match="no input"):
        InputMoments().mean()


def test_recording_inputs_hooks_only_the_named_points_and_removes_the_hooks() -> None:
    named = {"a": FakeQuantizer("a"), "b": FakeQuantizer("b")}
    with recording_inputs(named, ["a"]) as moments:
        named["a"](torch.ones(4, 3))
        named["b"](torch.ones(4, 3))
    assert set(moments) == {"a"} and moments["a"].count == 4
    named["a"](torch.ones(2, 3))
    assert moments["a"].count == 4
    with pytest.raises(KeyError, match="no quantizer implements point 'c'"):
        with recording_inputs(named, ["c"]):
            pass
