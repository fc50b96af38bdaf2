"""Log-mel filterbank features, deltas, per-speaker CMVN and frame phone targets.

Kaldi-like filterbanks (what MOHAQ's pytorch-kaldi SRU recipe reads), written
with torch only (torchaudio is not a dependency):

* frames of 25 ms (400 samples) every 10 ms (160), only whole frames
  (Kaldi's ``snip_edges``): ``num_frames = 1 + (N - 400) // 160``;
* per frame: DC removal, pre-emphasis 0.97, Povey window (Hann^0.85) or
  Hamming, zero padding to a 512-point FFT, power spectrum;
* triangular filters equally spaced on the mel scale ``1127 ln(1 + f / 700)``
  between 20 Hz and Nyquist; natural log of the energies, floored.

The framing is done by hand and transformed with ``torch.fft.rfft`` rather
than ``torch.stft``: ``torch.stft`` centres a 400-sample window inside each
512-sample chunk and cannot remove the DC or pre-emphasize per frame, so its
frames would neither line up with Kaldi's nor with the PHN frame centres below.

Order of the pipeline: log-mel -> (deltas) -> per-speaker CMVN, so every
output dimension, deltas included, is zero-mean and unit-variance per speaker.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from mohaq.datamodules.phones import IGNORE_INDEX, class_index_48

WindowType = Literal["povey", "hamming"]


@dataclass(frozen=True)
class FeatureConfig:
    """How waveforms become feature frames.

    Attributes:
        num_mel_bins: filterbank channels (23 is Kaldi's default and MOHAQ's input).
        deltas: append first and second time derivatives (triples the size).
        sample_rate: Hz.
        frame_length: samples per frame (25 ms).
        frame_shift: samples between frames (10 ms).
        n_fft: FFT size; frames are zero-padded to it.
        window: ``povey`` (Kaldi's default) or ``hamming``.
        preemphasis: coefficient of ``x[t] - a x[t-1]`` inside each frame.
        low_freq: lowest filter edge, Hz.
        high_freq: highest filter edge, Hz; 0 or less means Nyquist + high_freq.
        log_floor: energies are floored here before the log (silence is exactly 0).
        delta_window: half-width of the delta regression.
    """

    num_mel_bins: int = 23
    deltas: bool = False
    sample_rate: int = 16_000
    frame_length: int = 400
    frame_shift: int = 160
    n_fft: int = 512
    window: WindowType = "povey"
    preemphasis: float = 0.97
    low_freq: float = 20.0
    high_freq: float = 0.0
    log_floor: float = 1e-10
    delta_window: int = 2

    def __post_init__(self) -> None:
        if self.n_fft < self.frame_length:
            raise ValueError(f"n_fft={self.n_fft} must be >= frame_length={self.frame_length}")
        if self.window not in ("povey", "hamming"):
            raise ValueError(f"window={self.window!r}; allowed: 'povey', 'hamming'")
        if self.num_mel_bins < 1:
            raise ValueError(f"num_mel_bins={self.num_mel_bins}; allowed: a positive integer")
        # Too many bins for the FFT resolution leaves low filters without any FFT bin.
        empty = int((mel_filterbank(self).amax(dim=1) <= 0).sum())
        if empty:
            raise ValueError(
                f"num_mel_bins={self.num_mel_bins} leaves {empty} filter(s) empty with "
                f"n_fft={self.n_fft}; use fewer bins (23, 40 and 80 work) or a larger n_fft"
            )

    @property
    def num_features(self) -> int:
        return self.num_mel_bins * (3 if self.deltas else 1)

    def as_dict(self) -> dict[str, object]:
        """Plain values, for the cache key."""
        return asdict(self)


def num_frames(num_samples: int, config: FeatureConfig) -> int:
    """Whole frames in ``num_samples`` samples: ``1 + (N - frame_length) // frame_shift``, or 0."""
    if num_samples < config.frame_length:
        return 0
    return 1 + (num_samples - config.frame_length) // config.frame_shift


def frame_window(config: FeatureConfig) -> Tensor:
    """The analysis window (float64), symmetric over ``frame_length`` samples."""
    n = torch.arange(config.frame_length, dtype=torch.float64)
    cosine = torch.cos(2 * math.pi * n / (config.frame_length - 1))
    if config.window == "hamming":
        return 0.54 - 0.46 * cosine
    return (0.5 - 0.5 * cosine) ** 0.85


def hz_to_mel(hz: Tensor | float) -> Tensor:
    return 1127.0 * torch.log1p(torch.as_tensor(hz, dtype=torch.float64) / 700.0)


def mel_filterbank(config: FeatureConfig) -> Tensor:
    """Triangular mel filters, shape ``[num_mel_bins, n_fft // 2 + 1]`` (float64).

    Each filter rises linearly in mel from its left edge to its centre and
    falls to its right edge; edges and centres are equally spaced in mel
    between ``low_freq`` and ``high_freq``.
    """
    nyquist = config.sample_rate / 2
    high = config.high_freq if config.high_freq > 0 else nyquist + config.high_freq
    low_mel, high_mel = hz_to_mel(config.low_freq), hz_to_mel(high)
    step = (high_mel - low_mel) / (config.num_mel_bins + 1)
    edges = low_mel + step * torch.arange(config.num_mel_bins + 2, dtype=torch.float64)
    left, centre, right = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    bin_hz = (
        torch.arange(config.n_fft // 2 + 1, dtype=torch.float64) * config.sample_rate / config.n_fft
    )
    mel = hz_to_mel(bin_hz)[None, :]
    rising = (mel - left) / (centre - left)
    falling = (right - mel) / (right - centre)
    return torch.clamp(torch.minimum(rising, falling), min=0.0)


def power_spectrum(waveform: Tensor, config: FeatureConfig) -> Tensor:
    """Per-frame power spectrum, ``[num_frames, n_fft // 2 + 1]`` (float64).

    Args:
        waveform: 1-D samples (any float scale; TIMIT's are in [-1, 1)).

    Raises:
        ValueError: if the waveform is shorter than one frame.
    """
    signal = torch.as_tensor(waveform, dtype=torch.float64).flatten()
    if num_frames(signal.numel(), config) == 0:
        raise ValueError(
            f"waveform of {signal.numel()} samples is shorter than one frame "
            f"({config.frame_length} samples)"
        )
    frames = signal.unfold(0, config.frame_length, config.frame_shift)
    frames = frames - frames.mean(dim=1, keepdim=True)
    # Pre-emphasis inside the frame; the first sample uses itself as predecessor (Kaldi).
    previous = torch.cat([frames[:, :1], frames[:, :-1]], dim=1)
    frames = (frames - config.preemphasis * previous) * frame_window(config)
    spectrum = torch.fft.rfft(frames, n=config.n_fft, dim=1)
    return spectrum.real**2 + spectrum.imag**2


def log_mel(waveform: Tensor | np.ndarray, config: FeatureConfig) -> Tensor:
    """Log mel filterbank energies, ``[num_frames, num_mel_bins]`` float32.

    Raises:
        ValueError: if the waveform is shorter than one frame.
    """
    energies = power_spectrum(torch.as_tensor(waveform), config) @ mel_filterbank(config).T
    return torch.log(torch.clamp(energies, min=config.log_floor)).float()


def add_deltas(features: Tensor, window: int = 2) -> Tensor:
    """Appends deltas and delta-deltas: ``[T, F] -> [T, 3F]``.

    delta_t = sum_{n=1..N} n (c_{t+n} - c_{t-n}) / (2 sum n^2), frames beyond
    the edges repeating the first/last one; delta-deltas apply it to the deltas.
    """

    def regression(values: Tensor) -> Tensor:
        padded = torch.cat(
            [values[:1].expand(window, -1), values, values[-1:].expand(window, -1)], dim=0
        )
        length = values.shape[0]
        total = torch.zeros_like(values)
        for n in range(1, window + 1):
            total += n * (
                padded[window + n : window + n + length] - padded[window - n : window - n + length]
            )
        return total / (2 * sum(n * n for n in range(1, window + 1)))

    delta = regression(features)
    return torch.cat([features, delta, regression(delta)], dim=1)


def utterance_features(waveform: Tensor | np.ndarray, config: FeatureConfig) -> Tensor:
    """Log-mel (and deltas if configured) of one utterance, before CMVN."""
    features = log_mel(waveform, config)
    return add_deltas(features, config.delta_window) if config.deltas else features


def speaker_cmvn(features: Sequence[Tensor], variance_floor: float = 1e-10) -> list[Tensor]:
    """Normalizes one speaker's utterances to zero mean, unit variance per dimension.

    The statistics are over all frames of all the utterances given, so the
    caller passes exactly one speaker's utterances.

    Args:
        features: ``[T_i, F]`` tensors of one speaker.
        variance_floor: guards against constant dimensions (digital silence).
    """
    stacked = torch.cat([f.double() for f in features], dim=0)
    mean = stacked.mean(dim=0)
    std = torch.sqrt(torch.clamp(stacked.var(dim=0, unbiased=False), min=variance_floor))
    return [((f.double() - mean) / std).float() for f in features]


def frame_labels(
    segments: Sequence[tuple[int, int, str]], frames: int, config: FeatureConfig
) -> Tensor:
    """48-class target of every frame, int8 ``[frames]``.

    Frame i is labelled with the phone whose segment ``[start, end)`` holds its
    centre sample ``i * frame_shift + frame_length // 2``; ``q`` and centres
    outside every segment get IGNORE_INDEX.

    Args:
        segments: ``(start, end, phone)`` with 61-set symbols, sorted and contiguous.
        frames: number of frames of the utterance.

    Raises:
        ValueError: for an unknown phone symbol.
    """
    centres = torch.arange(frames, dtype=torch.long) * config.frame_shift + config.frame_length // 2
    labels = torch.full((frames,), IGNORE_INDEX, dtype=torch.int8)
    for start, end, phone in segments:
        inside = (centres >= start) & (centres < end)
        labels[inside] = class_index_48(phone)
    return labels
