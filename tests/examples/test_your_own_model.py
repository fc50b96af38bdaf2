"""The README's "Your own model" example runs as shipped and is what the README shows."""

from __future__ import annotations

import csv
import re
import runpy
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "your_own_model.py"


def test_readme_shows_the_example_and_it_is_short() -> None:
    blocks = re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(), re.S)
    assert EXAMPLE.read_text() in blocks
    code = [line for line in EXAMPLE.read_text().splitlines() if line.strip()]
    assert len(code) <= 30


def test_example_converts_and_searches_the_user_model(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    namespace = runpy.run_path(str(EXAMPLE), run_name="__main__")
    model = namespace["model"]
    assert type(model.rnn).__name__ == "QuantGRU" and type(model.out).__name__ == "QuantLinear"
    with open(tmp_path / "runs" / "search" / "pareto.csv") as handle:
        front = list(csv.DictReader(handle))
    assert front and all(0.0 <= float(row["optimization_error"]) <= 1.0 for row in front)
