"""TIMIT speaker lists of the standard Kaldi recipe, and the dev/test split.

The lists are those of Kaldi's `egs/timit/s5/conf/dev_spk.list` (50 speakers)
and `conf/test_spk.list` (the 24-speaker core test set). Both sets lie in
TIMIT's TEST part; no speaker is in both. Kaldi writes them in lower case;
this module keeps them upper-case, the way the LDC tree names folders, and
every comparison upper-cases the folder names first.
"""

from __future__ import annotations

from collections.abc import Iterable

DEV_SPEAKERS: frozenset[str] = frozenset(
    """
    FADG0 FAKS0 FCAL1 FCMH0 FDAC1 FDMS0 FDRW0 FEDW0 FGJD0 FJEM0
    FJMG0 FJSJ0 FKMS0 FMAH0 FMML0 FNMR0 FREW0 FSEM0 MAJC0 MBDG0
    MBNS0 MBWM0 MCSH0 MDLF0 MDLS0 MDVC0 MERS0 MGJF0 MGLB0 MGWT0
    MJAR0 MJFC0 MJSW0 MMDB1 MMDM2 MMJR0 MMWH0 MPDF0 MRCS0 MREB0
    MRJM4 MRJR0 MROA0 MRTK0 MRWS1 MTAA0 MTDT0 MTEB0 MTHC0 MWJG0
    """.split()
)

CORE_TEST_SPEAKERS: frozenset[str] = frozenset(
    """
    FDHC0 FELC0 FJLM0 FMGD0 FMLD0 FNLP0 FPAS0 FPKT0 MBPM0 MCMJ0 MDAB0 MGRT0
    MJDH0 MJLN0 MJMP0 MKLT0 MLLL0 MLNT0 MNJM0 MPAM0 MTAS1 MTLS0 MWBT0 MWEW0
    """.split()
)


def is_standard_timit(test_speakers: Iterable[str]) -> bool:
    """Whether a TEST part holds the whole core test set (so it is the real TIMIT).

    Args:
        test_speakers: speaker ids found under TEST/ (any case).
    """
    return CORE_TEST_SPEAKERS <= {speaker.upper() for speaker in test_speakers}


def split_test_speakers(test_speakers: Iterable[str]) -> tuple[list[str], list[str]]:
    """Divides TEST/ speakers into (dev, test) speaker lists, both sorted.

    The real TIMIT (all 24 core-test speakers present) gets Kaldi's lists: dev
    = the 50 dev speakers found, test = the core test set; the other TEST
    speakers are unused, as in Kaldi. Any other corpus (the synthetic one) is
    split by speaker: sorted ids alternate dev, test, dev, ... so that both
    sides get speakers of both sexes and all dialect regions (ids start with
    the sex letter), and no speaker is ever on both sides.

    Args:
        test_speakers: speaker ids found under TEST/, upper-case.

    Returns:
        The dev speakers and the test speakers.
    """
    speakers = sorted({speaker.upper() for speaker in test_speakers})
    if is_standard_timit(speakers):
        dev = [speaker for speaker in speakers if speaker in DEV_SPEAKERS]
        test = [speaker for speaker in speakers if speaker in CORE_TEST_SPEAKERS]
        return dev, test
    return speakers[0::2], speakers[1::2]


assert len(DEV_SPEAKERS) == 50 and len(CORE_TEST_SPEAKERS) == 24
assert not DEV_SPEAKERS & CORE_TEST_SPEAKERS
