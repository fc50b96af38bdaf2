"""Every typed error of the toolkit ends a command in two lines and its own exit status."""

from __future__ import annotations

import ast
import builtins
import io
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from mohaq.cli_errors import (
    DEBUG_ENV,
    ERROR_KINDS,
    INTERRUPTED_EXIT,
    classify,
    qualified_name,
    run_command,
)

REPO = Path(__file__).resolve().parents[1]
# Source folder -> installed package (setup.py's package_dir).
PACKAGES = {"mohaq": "mohaq", "callbacks": "mohaq.callbacks", "datamodules": "mohaq.datamodules"}

# Written down here, independently of the table in mohaq/cli_errors.py.
EXPECTED_EXIT = {
    "BitAssignmentError": 2,
    "ConversionError": 2,
    "UnsupportedConfigurationError": 2,
    "CorpusError": 3,
    "KeywordCorpusError": 3,
    "SynthesisError": 3,
    "EspeakError": 3,
    "CheckpointMismatchError": 4,
    "CheckpointNotFoundError": 4,
    "SRUImportError": 4,
    "CostModelError": 5,
    "InfeasibleAssignmentError": 5,
    "ConstantError": 5,
    "LookupTableError": 5,
    "PlatformError": 5,
    "PlatformConstantError": 5,
    "MissingConstantError": 5,
    "UnknownCostModelError": 5,
    "SearchConfigError": 6,
    "ObjectiveError": 6,
    "SearchSpaceError": 6,
    "AlgorithmError": 6,
    "BudgetError": 6,
    "PTQConfigError": 6,
    "ExecutorError": 6,
    "EvaluatorError": 6,
    "BeaconConfigError": 6,
    "RetrainingError": 6,
    "ResumeError": 7,
    "RunStorageError": 7,
    "DamagedLogError": 7,
    "RunLockError": 7,
    "RunDirectoryInUseError": 7,
    "BeaconStoreError": 7,
    "FeatureCacheError": 7,
    "CacheDamagedError": 7,
    "TrainingDivergedError": 8,
    "BeaconsFailedError": 8,
    "ExportError": 9,
    "ExportFileNotFoundError": 9,
    "FixedPointError": 9,
}


def _exception_classes_in_source() -> dict[str, str]:
    """Qualified name -> file of every public exception class the toolkit defines,
    found by reading the source (not the table under test)."""
    found: dict[str, tuple[str, list[str]]] = {}
    for folder, package in PACKAGES.items():
        for path in sorted((REPO / folder).rglob("*.py")):
            module = ".".join([package, *path.relative_to(REPO / folder).with_suffix("").parts])
            module = module.removesuffix(".__init__")
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.ClassDef):
                    bases = [
                        b.attr if isinstance(b, ast.Attribute) else getattr(b, "id", "")
                        for b in node.bases
                    ]
                    found[node.name] = (f"{module}.{node.name}", bases)
    exceptions = {
        name
        for name, value in vars(builtins).items()
        if isinstance(value, type) and issubclass(value, BaseException)
    }
    changed = True
    errors: set[str] = set()
    while changed:
        changed = False
        for name, (_, bases) in found.items():
            if name not in errors and any(b in exceptions or b in errors for b in bases):
                errors.add(name)
                changed = True
    return {found[n][0]: n for n in errors if not n.startswith("_")}


def test_every_exception_class_of_the_toolkit_has_an_exit_status() -> None:
    in_source = _exception_classes_in_source()
    table = {name for name in ERROR_KINDS if name.startswith("mohaq.")}
    assert set(in_source) == table, (
        f"not in the table: {sorted(set(in_source) - table)}; "
        f"no longer in the source: {sorted(table - set(in_source))}"
    )
    assert {n.rsplit(".", 1)[1] for n in table} == set(EXPECTED_EXIT)


# -- each class, raised the way the toolkit raises it where that is cheap ----------------------
def _platform_file(tmp_path: Path) -> Path:
    path = tmp_path / "mine.yaml"
    path.write_text("cost_model: silago\nconstants: {sram_pj_per_bit: 1.0}\n")
    return path


def _damaged_log(tmp_path: Path) -> Exception:
    from mohaq.search.records import EvaluationLog

    run = tmp_path / "run"
    run.mkdir()
    (run / "evaluations.jsonl").write_text('{"index": 0, "crc32": "00000000"}\n{"index": 1}\n')
    try:
        EvaluationLog(run).load()
    except Exception as error:  # noqa: BLE001 - returned for the test to format
        return error
    raise AssertionError("the damaged log was accepted")


def _raised(function: Callable[[], object]) -> Exception:
    try:
        function()
    except Exception as error:  # noqa: BLE001 - returned for the test to format
        return error
    raise AssertionError(f"{function} raised nothing")


def _in_use(tmp_path: Path) -> Exception:
    from mohaq.search.lock import RunLock, ensure_free

    with RunLock(tmp_path / "held", "mohaq search"):
        return _raised(lambda: ensure_free(tmp_path / "held"))


def _errors(tmp_path: Path) -> dict[str, Callable[[], Exception]]:
    from mohaq.beacons.retraining import RetrainingError
    from mohaq.beacons.selection import BeaconConfigError
    from mohaq.beacons.stage import BeaconsFailedError
    from mohaq.beacons.store import BeaconStore
    from mohaq.callbacks.divergence import TrainingDivergedError
    from mohaq.checkpoints import read_checkpoint
    from mohaq.convert import make_quantizable
    from mohaq.convert.recurrent import ConversionError
    from mohaq.datamodules.espeak import EspeakError
    from mohaq.datamodules.feature_cache import CacheDamagedError, FeatureCacheError
    from mohaq.datamodules.keywords import KeywordCorpusError
    from mohaq.datamodules.synth_timit import generate_corpus
    from mohaq.datamodules.timit_corpus import find_timit_root
    from mohaq.export.files import read_program
    from mohaq.export.fixed_point import quantize_multiplier
    from mohaq.export.program import ExportError
    from mohaq.hardware import get_cost_model, load_platform
    from mohaq.hardware.base import ConstantError, InfeasibleAssignmentError
    from mohaq.hardware.lookup_table import LookupTableError
    from mohaq.hardware.reference_workloads import mohaq_sru_workload
    from mohaq.models.sru_import import SRUImportError
    from mohaq.quant.assignment import BitAssignment
    from mohaq.quant.ptq import PTQConfig
    from mohaq.search.evaluators import Racing
    from mohaq.search.executors import resolve_executor
    from mohaq.search.lock import RunLockError
    from mohaq.search.objectives import parse_constraints
    from mohaq.search.proposers import resolve_algorithm
    from mohaq.search.proposers.haq_budget import BudgetError
    from mohaq.search.records import ResumeError, RunStorageError
    from mohaq.search.settings import SearchSettings
    from mohaq.search.space import SearchSpace

    not_a_checkpoint = tmp_path / "notes.ckpt"
    not_a_checkpoint.write_text("not a checkpoint")
    a_file = tmp_path / "a-file.txt"
    a_file.write_text("mine")
    workload = mohaq_sru_workload()
    silago = get_cost_model("silago")
    return {
        "BitAssignmentError": lambda: _raised(lambda: BitAssignment({"sru1.weight": 1})),
        "CorpusError": lambda: _raised(lambda: find_timit_root(tmp_path / "no-corpus")),
        "SynthesisError": lambda: _raised(
            lambda: generate_corpus(a_file, speakers=3, utterances_per_speaker=1, seed=0)
        ),
        "EspeakError": lambda: EspeakError("espeak has no voice 'xx' (expected e.g. 'en-us+m3')"),
        "CheckpointMismatchError": lambda: _raised(lambda: read_checkpoint(not_a_checkpoint)),
        "CheckpointNotFoundError": lambda: _raised(lambda: read_checkpoint(tmp_path / "x.ckpt")),
        "CostModelError": lambda: _raised(lambda: silago.describe("latency")),
        "InfeasibleAssignmentError": lambda: InfeasibleAssignmentError(
            "silago cannot run this assignment: sru1.weight at 3 bits"
        ),
        "ConstantError": lambda: ConstantError("allowed_bits", [], "is empty", "a non-empty list"),
        "LookupTableError": lambda: LookupTableError(
            "table.csv", "line 3: bits 'x' is not an integer"
        ),
        "PlatformError": lambda: _raised(lambda: load_platform("tpu")),
        "PlatformConstantError": lambda: _raised(
            lambda: load_platform("silago", sram_pj_per_bit=-1.0)
        ),
        "MissingConstantError": lambda: _raised(
            lambda: load_platform(str(_platform_file(tmp_path)))
        ),
        "UnknownCostModelError": lambda: _raised(lambda: get_cost_model("tpu")),
        "SearchConfigError": lambda: _raised(lambda: SearchSettings(bit_choices=[])),
        "ObjectiveError": lambda: _raised(
            lambda: parse_constraints({"max_latency": 1.0}, silago.metric_names)
        ),
        "SearchSpaceError": lambda: _raised(
            lambda: SearchSpace(workload, [3], allowed_bits=silago.allowed_bits)
        ),
        "AlgorithmError": lambda: _raised(lambda: resolve_algorithm("hill-climbing")),
        "ConversionError": lambda: ConversionError("nothing to convert in Sequential"),
        "UnsupportedConfigurationError": lambda: _raised(
            lambda: make_quantizable(torch.nn.LSTM(4, 8, proj_size=2))
        ),
        "KeywordCorpusError": lambda: KeywordCorpusError("no clips under /nowhere"),
        "BudgetError": lambda: BudgetError("no assignment meets latency <= 0.1 ms on bitfusion"),
        "PTQConfigError": lambda: _raised(lambda: PTQConfig.preset("fastest")),
        "SRUImportError": lambda: SRUImportError("SRUCell {'hidden': 3} does not match SRULayer"),
        "ExecutorError": lambda: _raised(lambda: resolve_executor("cluster", 1)),
        "EvaluatorError": lambda: _raised(lambda: Racing((0.5,), 2.0)),
        "BeaconConfigError": lambda: BeaconConfigError("num_beacons must be >= 1, got 0"),
        "RetrainingError": lambda: RetrainingError("max_attempts must be >= 1, got 0"),
        "ResumeError": lambda: ResumeError("runs/x holds a search with other settings"),
        "RunStorageError": lambda: RunStorageError(
            "cannot write runs/x/evaluations.jsonl: Read-only file system (errno 30)"
        ),
        "DamagedLogError": lambda: _damaged_log(tmp_path),
        "RunLockError": lambda: RunLockError("cannot lock runs/x: Permission denied"),
        "RunDirectoryInUseError": lambda: _in_use(tmp_path),
        "BeaconStoreError": lambda: _raised(lambda: BeaconStore(tmp_path).get("b007")),
        "FeatureCacheError": lambda: FeatureCacheError("cannot write the feature cache: disk full"),
        "CacheDamagedError": lambda: CacheDamagedError(
            "train.pt does not match its manifest", split="train", path=tmp_path / "train.pt"
        ),
        "TrainingDivergedError": lambda: TrainingDivergedError("loss is nan", epoch=0, step=1),
        "BeaconsFailedError": lambda: BeaconsFailedError("1 of 2 beacons were not retrained", []),
        "ExportError": lambda: ExportError("a search record needs both --run_dir and --index"),
        "ExportFileNotFoundError": lambda: _raised(
            lambda: read_program(tmp_path / "exports" / "model.safetensors")
        ),
        "FixedPointError": lambda: _raised(lambda: quantize_multiplier(float("nan"))),
    }


@pytest.mark.parametrize("name", sorted(EXPECTED_EXIT))
def test_each_typed_error_is_two_lines_and_its_exit_status(tmp_path: Path, name: str) -> None:
    error = _errors(tmp_path)[name]()
    assert type(error).__name__ == name, f"raised {type(error).__name__}: {error}"

    def command(argv: list[str]) -> None:
        raise error

    stderr = io.StringIO()
    status = run_command(command, ["search"], "mohaq search", stderr=stderr, environ={})
    assert status == EXPECTED_EXIT[name]
    lines = stderr.getvalue().splitlines()
    message = str(error).strip()
    assert len(lines) == 2 + message.count("\n"), lines
    kind = classify(error)
    assert kind is not None and kind.exit_code == status
    assert lines[0] == f"mohaq search: {kind.name}: {message.splitlines()[0]}"
    assert lines[-1] == (
        f"  ({name}, exit status {status}; --debug or MOHAQ_DEBUG=1 shows the traceback)"
    )
    assert "Traceback" not in stderr.getvalue()


def test_a_key_error_subclass_is_not_quoted(tmp_path: Path) -> None:
    from mohaq.hardware import get_cost_model

    stderr = io.StringIO()
    run_command(lambda argv: get_cost_model("tpu"), [], "mohaq", stderr=stderr, environ={})
    assert stderr.getvalue().startswith(
        "mohaq: platform error: unknown cost model 'tpu'; registered:"
    )


def test_debug_flag_or_environment_shows_the_traceback() -> None:
    from mohaq.search.settings import SearchConfigError

    seen: list[list[str]] = []

    def command(argv: list[str]) -> None:
        seen.append(argv)
        raise SearchConfigError("budget must be an integer >= 1, got 0")

    for argv, environ in (
        (["search", "--debug", "--budget", "0"], {}),
        (["search"], {DEBUG_ENV: "1"}),
    ):
        stderr = io.StringIO()
        assert run_command(command, argv, "mohaq search", stderr=stderr, environ=environ) == 6
        text = stderr.getvalue()
        assert text.startswith("Traceback (most recent call last):")
        assert text.endswith(
            "mohaq search: search error: budget must be an integer >= 1, got 0\n"
            "  (SearchConfigError, exit status 6; --debug or MOHAQ_DEBUG=1 shows the traceback)\n"
        )
    assert seen[0] == ["search", "--budget", "0"]  # --debug is not passed on
    stderr = io.StringIO()
    assert run_command(command, [], "mohaq", stderr=stderr, environ={DEBUG_ENV: "0"}) == 6
    assert "Traceback" not in stderr.getvalue()


def test_unexpected_errors_keep_their_traceback_and_ctrl_c_is_one_line() -> None:
    def bug(argv: list[str]) -> None:
        raise ZeroDivisionError("division by zero")

    with pytest.raises(ZeroDivisionError):
        run_command(bug, [], "mohaq", stderr=io.StringIO(), environ={})

    def interrupted(argv: list[str]) -> None:
        raise KeyboardInterrupt

    stderr = io.StringIO()
    assert run_command(interrupted, [], "mohaq", stderr=stderr, environ={}) == INTERRUPTED_EXIT
    assert stderr.getvalue() == "mohaq: interrupted\n"


def test_every_table_entry_names_a_real_class() -> None:
    import importlib

    for name in ERROR_KINDS:
        module, _, cls = name.rpartition(".")
        loaded = getattr(importlib.import_module(module), cls)
        assert qualified_name(loaded) == name


# -- through the real entry points ------------------------------------------------------------
SRU = str(REPO / "lightning_configs" / "sru_timit.yaml")


def test_mohaq_cost_unknown_platform_in_process(capsys: pytest.CaptureFixture) -> None:
    from mohaq.cli import main

    assert main(["cost", "-c", SRU, "--platforms", "[tpu]"]) == 5
    err = capsys.readouterr().err.splitlines()
    assert err[-2].startswith("mohaq cost: platform error: unknown platform 'tpu'")
    assert "Traceback" not in "\n".join(err)


def test_mohaq_cost_bad_bit_width_is_a_usage_error(capsys: pytest.CaptureFixture) -> None:
    from mohaq.cli import main

    assert main(["cost", "-c", SRU, "--uniform_bits", "1"]) == 2
    err = capsys.readouterr().err
    assert "mohaq cost: usage error: bits of point 'sru0.input' is 1; allowed: 2 to 16" in err


def test_console_scripts_exit_statuses(tmp_path: Path) -> None:
    """The installed commands, in their own processes: a toolkit error is two
    lines and its status; MOHAQ_DEBUG=1 adds the traceback; a parser error is short."""
    environ = {k: v for k, v in os.environ.items() if k != DEBUG_ENV}
    taken = tmp_path / "notes.txt"
    taken.write_text("mine")
    synth = [sys.executable, "-m", "mohaq.datamodules.synth_timit", "--out", str(taken),
             "--speakers", "3", "--utterances-per-speaker", "1", "--seed", "0"]  # fmt: skip
    done = subprocess.run(synth, capture_output=True, text=True, env=environ, timeout=300)
    assert done.returncode == 3, done.stderr
    assert done.stderr.splitlines()[-2].startswith("mohaq-synth-timit: data error: ")
    assert "is a file, not a folder" in done.stderr and "Traceback" not in done.stderr
    done = subprocess.run(
        synth, capture_output=True, text=True, env={**environ, DEBUG_ENV: "1"}, timeout=300
    )
    assert done.returncode == 3 and "Traceback (most recent call last)" in done.stderr

    mohaq = [sys.executable, "-c", "import sys; from mohaq.cli import main; sys.exit(main())"]
    done = subprocess.run([*mohaq, "search", "--budget", "many"], capture_output=True,
                          text=True, env=environ, timeout=300)  # fmt: skip
    assert done.returncode == 2
    assert len(done.stderr.splitlines()) <= 5, done.stderr
    assert 'error: Parser key "budget"' in done.stderr


QUICKSTART = str(REPO / "lightning_configs" / "quickstart.yaml")


def test_first_hour_errors_through_mohaq_are_two_lines(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A missing corpus, a missing or corrupt checkpoint: what the user sees."""
    from mohaq.cli import main

    monkeypatch.chdir(tmp_path)
    missing = tmp_path / "no-corpus"
    assert main(["fit", "-c", QUICKSTART, "--data.corpus_dir", str(missing)]) == 3
    err = capsys.readouterr().err.splitlines()
    assert err[-2].startswith(f"mohaq fit: data error: corpus folder '{missing}' does not exist")
    corrupt = tmp_path / "best.ckpt"
    corrupt.write_bytes(b"not a checkpoint")
    search = ["search", "-c", QUICKSTART, "--run_dir", str(tmp_path / "search")]
    assert main([*search, "--checkpoint", str(tmp_path / "bestt.ckpt")]) == 4
    err = capsys.readouterr().err.splitlines()
    assert err[-2] == (
        f"mohaq search: checkpoint error: checkpoint '{tmp_path / 'bestt.ckpt'}' does not exist; "
        f"{tmp_path} holds best.ckpt"
    )
    assert main([*search, "--checkpoint", str(corrupt)]) == 4
    assert "checkpoint error: cannot read checkpoint" in capsys.readouterr().err
    assert main([*search, "--checkpoint", str(corrupt), "--bit_choices", "[]"]) == 6
    err = capsys.readouterr().err.splitlines()
    assert err[-2].startswith("mohaq search: search error: bit_choices is empty; give at least")
