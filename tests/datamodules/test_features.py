"""Log-mel filterbank against an independent numpy reference, deltas, CMVN and frame targets."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mohaq.datamodules.features import (
    FeatureConfig,
    add_deltas,
    frame_labels,
    log_mel,
    mel_filterbank,
    num_frames,
    speaker_cmvn,
    utterance_features,
)
from mohaq.datamodules.phones import IGNORE_INDEX, PHONES_48


def _reference_log_mel_frame(signal: np.ndarray, index: int, bins: int) -> np.ndarray:
    """One frame the slow way: explicit loops and a direct DFT, no torch, no FFT."""
    frame = signal[160 * index : 160 * index + 400].astype(np.float64)
    frame = frame - frame.mean()
    emphasized = np.array([frame[n] - 0.97 * frame[max(n - 1, 0)] for n in range(400)])
    window = np.array([(0.5 - 0.5 * math.cos(2 * math.pi * n / 399)) ** 0.85 for n in range(400)])
    x = emphasized * window
    n = np.arange(400)
    power = np.array(
        [abs(np.sum(x * np.exp(-2j * math.pi * k * n / 512))) ** 2 for k in range(257)]
    )

    def mel(f: float) -> float:
        return 1127.0 * math.log(1.0 + f / 700.0)

    low, high = mel(20.0), mel(8000.0)
    edges = [low + (high - low) * m / (bins + 1) for m in range(bins + 2)]
    energies = np.zeros(bins)
    for m in range(bins):
        left, centre, right = edges[m], edges[m + 1], edges[m + 2]
        for k in range(257):
            f = mel(k * 16000 / 512)
            if left < f <= centre:
                energies[m] += power[k] * (f - left) / (centre - left)
            elif centre < f < right:
                energies[m] += power[k] * (right - f) / (right - centre)
    return np.log(np.maximum(energies, 1e-10))


@pytest.mark.parametrize("bins", [23, 40])
def test_log_mel_matches_direct_dft_reference(bins: int) -> None:
    rng = np.random.default_rng(3)
    signal = rng.standard_normal(1600) * 0.1 + np.sin(2 * np.pi * 440 * np.arange(1600) / 16000)
    features = log_mel(signal, FeatureConfig(num_mel_bins=bins))
    assert features.shape == (num_frames(1600, FeatureConfig()), bins) == (8, bins)
    for index in (0, 7):
        np.testing.assert_allclose(
            features[index].numpy(),
            _reference_log_mel_frame(signal, index, bins),
            rtol=0,
            atol=1e-4,
        )


def test_tone_lands_in_the_filter_centred_nearest_it() -> None:
    config = FeatureConfig()
    tone = np.sin(2 * np.pi * 1000 * np.arange(4000) / 16000)
    loudest = int(log_mel(tone, config).mean(dim=0).argmax())
    filters = mel_filterbank(config)
    centre_hz = filters.argmax(dim=1).double() * 16000 / 512
    assert loudest == int((centre_hz - 1000).abs().argmin())


def test_frame_count_and_too_short_input() -> None:
    config = FeatureConfig()
    assert [num_frames(n, config) for n in (399, 400, 559, 560, 8000)] == [0, 1, 1, 2, 48]
    assert log_mel(np.zeros(8000), config).shape == (48, 23)
    with pytest.raises(ValueError, match="399 samples is shorter than one frame"):
        log_mel(np.zeros(399), config)


def test_filterbank_shape_and_triangles() -> None:
    filters = mel_filterbank(FeatureConfig(num_mel_bins=40))
    assert filters.shape == (40, 257)
    assert (filters >= 0).all() and (filters <= 1).all()
    assert (filters.amax(dim=1) > 0.5).all()  # every filter reaches near its peak on some bin


def test_bad_mel_bin_counts() -> None:
    with pytest.raises(ValueError, match="num_mel_bins=0"):
        FeatureConfig(num_mel_bins=0)
    with pytest.raises(ValueError, match="num_mel_bins=200 leaves .* empty"):
        FeatureConfig(num_mel_bins=200)


def test_deltas_of_a_ramp() -> None:
    ramp = torch.arange(10, dtype=torch.float32)[:, None] * torch.tensor([[1.0, -2.0]])
    out = add_deltas(ramp)
    assert out.shape == (10, 6)
    torch.testing.assert_close(out[:, :2], ramp)
    # Interior: sum n * 2n * slope / (2 * sum n^2) = slope; the acceleration of a ramp is 0.
    torch.testing.assert_close(out[2:-2, 2:4], torch.tensor([[1.0, -2.0]]).expand(6, 2))
    torch.testing.assert_close(out[4:-4, 4:6], torch.zeros(2, 2))
    # First frame, edges repeated: (1*(c1 - c0) + 2*(c2 - c0)) / 10 = 0.5 slope.
    torch.testing.assert_close(out[0, 2:4], torch.tensor([0.5, -1.0]))
    assert utterance_features(
        np.random.default_rng(0).standard_normal(4000), FeatureConfig(deltas=True)
    ).shape == (23, 69)


def test_speaker_cmvn_gives_zero_mean_unit_variance_over_the_speaker() -> None:
    generator = torch.Generator().manual_seed(0)
    utterances = [torch.randn(n, 5, generator=generator) * 3 + 7 for n in (30, 50, 20)]
    normalized = speaker_cmvn(utterances)
    stacked = torch.cat(normalized)
    torch.testing.assert_close(stacked.mean(dim=0), torch.zeros(5), atol=1e-5, rtol=0)
    torch.testing.assert_close(stacked.std(dim=0, unbiased=False), torch.ones(5), atol=1e-5, rtol=0)
    # One speaker's statistics, not per utterance: the second utterance alone is not centred.
    shifted = speaker_cmvn([utterances[0], utterances[1] + 10])
    assert shifted[1].mean() > 0.5
    assert [n.shape for n in normalized] == [u.shape for u in utterances]


def test_frame_labels_from_hand_written_phn() -> None:
    # 4000 samples -> 1 + 3600 // 160 = 23 frames, centres 200 + 160 i.
    segments = [(0, 1000, "h#"), (1000, 1800, "sh"), (1800, 2600, "q"), (2600, 3700, "iy")]
    labels = frame_labels(segments, num_frames(4000, FeatureConfig()), FeatureConfig())
    sil, sh, iy = PHONES_48.index("sil"), PHONES_48.index("sh"), PHONES_48.index("iy")
    # Centres 200..840 (h#), 1000..1640 (sh), 1800..2440 (q), 2600..3560 (iy), 3720 past the PHN.
    expected = [sil] * 5 + [sh] * 5 + [IGNORE_INDEX] * 5 + [iy] * 7 + [IGNORE_INDEX]
    assert labels.dtype == torch.int8
    assert labels.tolist() == expected
