"""Command-line arguments shared by the tests that run ``mohaq`` on a tiny model."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = str(REPO / "lightning_configs" / "quickstart.yaml")


def tiny_quickstart_args(workdir: Path) -> list[str]:
    """The quickstart config shrunk to a few-unit SRU on the corpus in ``workdir/corpus``."""
    return [
        "-c", QUICKSTART,
        "--data.corpus_dir", str(workdir / "corpus"),
        "--data.cache_dir", str(workdir / "cache"),
        "--data.batch_size", "2",
        "--data.optimization_set_utterances", "2",
        "--model.hidden_size", "8",
        "--model.projection_size", "4",
        "--model.num_layers", "2",
        "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false",
    ]  # fmt: skip
