"""`mohaq export` then `mohaq test --exported`, end to end on a tiny LDC-layout corpus."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_args import tiny_quickstart_args
from test_timit_corpus import write_small_corpus

from mohaq.cli import build_cli as main
from mohaq.export import ExportError
from mohaq.search.records import EvaluationLog, EvaluationRecord


def _per(cli) -> float:  # type: ignore[no-untyped-def]
    return float(cli.trainer.callback_metrics["test/per"])


def test_export_a_search_record_and_score_what_ships(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_small_corpus(tmp_path / "corpus", seconds=0.4)
    monkeypatch.chdir(tmp_path)
    common = tiny_quickstart_args(tmp_path)
    main(["fit", *common, "--trainer.max_epochs", "1"])
    checkpoint = str(tmp_path / "runs" / "quickstart" / "checkpoints" / "best.ckpt")
    points = ["sru0.input", "sru0.weight", "proj1.input", "proj1.weight", "sru1.input", "sru1.weight",
              "output.input", "output.weight"]  # fmt: skip
    bits = {name: 4 if name == "sru1.weight" else 8 for name in points}
    run_dir = tmp_path / "search"
    run_dir.mkdir()
    with EvaluationLog(run_dir) as log:
        for index in range(4):  # the search's records 0..3; the one exported is 3
            record_bits = bits if index == 3 else dict.fromkeys(points, 16)
            log.append(
                EvaluationRecord(
                    index=index,
                    bits=record_bits,
                    genes=[],
                    objectives={"error": 0.5},
                    losses=[0.5],
                    metrics={},
                    error=0.5,
                    feasible=True,
                )  # fmt: skip
            )

    # A wrong source fails before any work.
    with pytest.raises(ExportError, match="exactly one"):
        main(["export", *common, "--checkpoint", checkpoint, "--uniform_bits", "8", "--index", "3"])

    out = tmp_path / "exported"
    main(["export", *common, "--checkpoint", checkpoint, "--run_dir", str(run_dir), "--index", "3",
          "--out_dir", str(out)])  # fmt: skip
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["bits"] == bits and manifest["source"]["index"] == 3
    assert (out / "model.safetensors").is_file() and (out / "model.onnx").is_file()

    fake_quant = main([
        "test", *common, "--ckpt_path", checkpoint,
        "--trainer.callbacks+=mohaq.callbacks.qat.QuantizationAwareTraining",
        "--trainer.callbacks.bits", json.dumps(bits),
    ])  # fmt: skip
    integer = main(["test", *common, "--exported", str(out)])
    onnx = main(["test", *common, "--exported", str(out / "model.onnx"), "--engine", "onnx"])
    assert _per(onnx) == pytest.approx(_per(fake_quant), abs=1e-6)
    assert _per(integer) == pytest.approx(_per(fake_quant), abs=0.05)
    dev = main(["test", *common, "--exported", str(out), "--split", "dev"])
    assert "test/per" in dev.trainer.callback_metrics

    with pytest.raises(ValueError, match="not both"):
        main(["test", *common, "--exported", str(out), "--ckpt_path", checkpoint])
