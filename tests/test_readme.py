"""The README's command lines work and do not collide.

Every command of the README's bash blocks (and the `mohaq` lines of
scripts/quickstart.sh, where the README runs it) is:

- parsed by the real `mohaq` parser (a renamed option or a bad value fails),
- run for real where that is cheap: `mohaq cost`, `python -m
  mohaq.hardware.report`, `mohaq-synth-timit` at 3 speakers x 1 utterance,
- checked for paths: each command writes its own run directory, and every
  path a command reads was written by a command before it.

A command the test does not know fails it, so a new README line needs a rule here.
"""

from __future__ import annotations

import ast
import builtins
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
QUICKSTART_SH = REPO / "scripts" / "quickstart.sh"
PLACEHOLDER = "/path/to/"
#: Commands that are not the toolkit's or that install or test it.
NOT_OURS = (("pip",), ("python", "-m", "pytest"), ("tensorboard",))
#: The keyword spotter's own LightningCLI (parsed only: it trains).
KWS_CLI = ("python", "-m", "mohaq.tasks.keyword_spotting")
#: `mohaq` subcommands parsed only (they train or search: the CLI tests run them).
PARSED_ONLY = {"fit", "validate", "test", "search", "beacons", "export"}


def bash_blocks(text: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", text, re.S)


def command_lines(block: str) -> Iterator[list[str]]:
    """Each command of a bash block: continuation lines joined, comments
    dropped, ``a && b`` split."""
    for line in block.replace("\\\n", " ").splitlines():
        tokens = shlex.split(line, comments=True)
        command: list[str] = []
        for token in [*tokens, "&&"]:
            if token == "&&":
                if command:
                    yield command
                command = []
            else:
                command.append(token)


def quickstart_commands() -> list[list[str]]:
    """The `mohaq` lines of scripts/quickstart.sh, with its run folder filled in."""
    text = QUICKSTART_SH.read_text()
    run = re.search(r"^run=(\S+)$", text, re.M)
    assert run, "quickstart.sh sets run=..."
    commands = []
    for command in command_lines(text.replace("$run", run.group(1))):
        if command[0] == "mohaq":
            commands.append(command)
    return commands


def readme_commands() -> list[list[str]]:
    commands = []
    for block in bash_blocks(README.read_text()):
        for command in command_lines(block):
            if command[:2] == ["bash", "scripts/quickstart.sh"]:
                commands += quickstart_commands()
            else:
                commands.append(command)
    return commands


def option(command: list[str], name: str) -> str | None:
    """The value of ``--name value`` or ``--name=value`` (the last one)."""
    found = None
    for i, token in enumerate(command):
        if token == name and i + 1 < len(command):
            found = command[i + 1]
        elif token.startswith(name + "="):
            found = token.split("=", 1)[1]
    return found


def configs(command: list[str]) -> dict:
    """The merged YAML of the command's ``-c`` files."""
    merged: dict = {}
    for i, token in enumerate(command):
        if token in ("-c", "--config"):
            merged.update(yaml.safe_load((REPO / command[i + 1]).read_text()) or {})
    return merged


def _logger_root(command: list[str]) -> str:
    given = option(command, "--trainer.logger.save_dir") or option(
        command, "--trainer.logger.init_args.save_dir"
    )
    if given:
        return given
    return configs(command)["trainer"]["logger"]["init_args"]["save_dir"]


@dataclass
class Paths:
    """What a command reads and writes."""

    reads: list[str] = field(default_factory=list)
    writes: list[str] = field(default_factory=list)


def paths_of(command: list[str]) -> Paths:
    """Where each README command reads and writes, as the toolkit decides it
    (checkpoints beside the logger's save_dir, a search in its run_dir, ...)."""
    paths = Paths()
    if command[0] == "mohaq-synth-timit":
        paths.writes.append(option(command, "--out"))
        return paths
    if tuple(command[:3]) == KWS_CLI and command[3] == "fit":
        for callback in configs(command)["trainer"]["callbacks"]:
            if callback["class_path"].endswith("ModelCheckpoint"):
                init = callback["init_args"]
                paths.writes.append(f"{init['dirpath']}/{init['filename']}.ckpt")
        return paths
    if command[0] != "mohaq" or command[1] not in PARSED_ONLY:
        return paths
    sub = command[1]
    corpus = option(command, "--data.corpus_dir")
    if corpus:
        paths.reads.append(corpus)
    for name in (
        "--ckpt_path",
        "--checkpoint",
        "--trainer.callbacks.init_checkpoint",
        "--exported",
    ):
        value = option(command, name)
        if value:
            paths.reads.append(value)
    root = _logger_root(command) if sub in ("fit", "test", "validate") else None
    if sub == "fit":
        paths.writes += [f"{root}/checkpoints/best.ckpt", f"{root}/fit"]
    elif sub in ("test", "validate"):
        paths.writes.append(f"{root}/{sub}")
    elif sub == "search":
        paths.writes.append(option(command, "--run_dir") or configs(command)["run_dir"])
    elif sub == "beacons":
        run_dir = option(command, "--run_dir") or configs(command)["run_dir"]
        paths.reads.append(run_dir)
        paths.writes += [f"{run_dir}/beacons", f"{run_dir}/beacon_search"]
    elif sub == "export":
        paths.reads.append(option(command, "--run_dir"))
        paths.writes.append(option(command, "--out_dir"))
    return paths


def _within(path: str, written: str) -> bool:
    return path == written or path.startswith(written.rstrip("/") + "/")


def test_each_command_writes_its_own_place_and_reads_what_an_earlier_one_wrote() -> None:
    commands = readme_commands()
    assert len(commands) > 10, "the README's bash blocks were not found"
    written: dict[str, str] = {}
    for command in commands:
        line = " ".join(command)
        paths = paths_of(command)
        for path in paths.reads:
            if path.startswith(PLACEHOLDER):
                continue
            assert any(_within(path, w) for w in written), (
                f"README: `{line}` reads {path}, which no command before it writes"
            )
        for path in paths.writes:
            if path.endswith(("/test", "/validate")):  # scoring logs beside a fit: versioned
                continue
            assert path not in written, (
                f"README: `{line}` writes {path}, as `{written[path]}` before it did"
            )
            written[path] = line


def _known(command: list[str]) -> bool:
    if any(command[: len(prefix)] == list(prefix) for prefix in NOT_OURS):
        return True
    if command[0] == "mohaq":
        return command[1] in PARSED_ONLY | {"cost"}
    if tuple(command[:3]) == KWS_CLI:
        return command[3] == "fit"
    return command[0] == "mohaq-synth-timit" or command[:3] == [
        "python", "-m", "mohaq.hardware.report"
    ]  # fmt: skip


def test_every_readme_command_is_one_this_test_knows() -> None:
    unknown = [" ".join(c) for c in readme_commands() if not _known(c)]
    assert not unknown, f"add a rule to tests/test_readme.py for: {unknown}"


class _Parsed(Exception):
    """Stops the CLI after parsing; carries it."""

    def __init__(self, cli: object) -> None:
        super().__init__()
        self.cli = cli


def _parse_only_cli() -> type:
    from mohaq.cli import MohaqCLI

    class ParseOnly(MohaqCLI):
        def before_instantiate_classes(self) -> None:
            raise _Parsed(self)

    return ParseOnly


def test_the_training_and_search_commands_parse(monkeypatch: pytest.MonkeyPatch) -> None:
    from mohaq.cli import build_cli

    monkeypatch.chdir(REPO)  # the README runs from the repository's root
    commands = [c for c in readme_commands() if c[0] == "mohaq" and c[1] in PARSED_ONLY]
    assert {c[1] for c in commands} >= {"fit", "test", "search", "beacons", "export"}
    with pytest.raises(_Parsed) as parsed:
        build_cli(commands[0][1:], cli_class=_parse_only_cli())
    assert parsed.value.cli.subcommand == commands[0][1]
    parser = parsed.value.cli.parser  # built once: each parse below takes milliseconds
    for command in commands[1:]:
        config = parser.parse_args(command[1:])  # exits (status 2) on a bad option
        assert config["subcommand"] == command[1]


def test_the_keyword_spotter_commands_parse(monkeypatch: pytest.MonkeyPatch) -> None:
    """Its own CLI's fit (stopped after parsing), and the search of its checkpoint
    names the keyword spotter and its DataModule by class_path."""
    from pytorch_lightning.cli import LightningCLI

    from mohaq.tasks.keyword_spotting import main as kws

    monkeypatch.chdir(REPO)

    def stop(cli: object) -> None:
        raise _Parsed(cli)

    monkeypatch.setattr(LightningCLI, "before_instantiate_classes", stop)
    fits = [c for c in readme_commands() if tuple(c[:3]) == KWS_CLI]
    assert fits, "the README trains the keyword spotter"
    for command in fits:
        with pytest.raises(_Parsed) as parsed:
            kws(command[3:])
        assert parsed.value.cli.subcommand == "fit"
    searches = [c for c in readme_commands() if c[:2] == ["mohaq", "search"] and "kws" in str(c)]
    assert searches, "the README searches the keyword spotter"
    from mohaq.cli import build_cli

    for command in searches:
        with pytest.raises(_Parsed) as parsed:
            build_cli(command[1:], cli_class=_parse_only_cli())
        config = parsed.value.cli.config["search"]
        assert config.model.class_path == "mohaq.tasks.keyword_spotting.KeywordSpotter"
        assert config.model.init_args.hidden_size == 64 and config.metric


def test_the_cheap_commands_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    from mohaq.cli import main as mohaq
    from mohaq.datamodules.synth_timit import main as synth
    from mohaq.hardware.report import command_line as hardware_report

    monkeypatch.chdir(REPO)
    ran = set()
    for command in readme_commands():
        if command[:2] == ["mohaq", "cost"]:
            assert mohaq(command[1:]) == 0, " ".join(command)
            assert "== silago ==" in capsys.readouterr().out
        elif command[:3] == ["python", "-m", "mohaq.hardware.report"]:
            assert hardware_report(command[3:]) == 0, " ".join(command)
        elif command[0] == "mohaq-synth-timit":
            tiny = list(command[1:])
            tiny[tiny.index("--out") + 1] = str(tmp_path / option(command, "--out"))
            tiny[tiny.index("--speakers") + 1] = "3"
            tiny[tiny.index("--utterances-per-speaker") + 1] = "1"
            assert synth(tiny) == 0, " ".join(command)
            assert (tmp_path / option(command, "--out") / "corpus.json").is_file()
        else:
            continue
        ran.add(command[0] if command[0] != "python" else "hardware.report")
    assert ran == {"mohaq", "hardware.report", "mohaq-synth-timit"}


def test_the_cluster_guide_python_names_only_what_it_defines() -> None:
    """docs/cluster.md's Python example: every name is imported or assigned, and
    the DataModule arguments exist."""
    import inspect

    from mohaq.datamodules.timit import TIMITDataModule

    text = (REPO / "docs" / "cluster.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert blocks
    for block in blocks:
        tree = ast.parse(block)
        defined = set(dir(builtins))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                defined |= {a.asname or a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                defined.add(node.id)
        used = {
            n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)
        }
        assert used <= defined, f"docs/cluster.md uses undefined {sorted(used - defined)}"
        for node in ast.walk(tree):
            if isinstance(node, ast.keyword) and node.arg == "datamodule_kwargs":
                keys = {k.value for k in node.value.keys}
                accepted = set(inspect.signature(TIMITDataModule).parameters)
                assert keys <= accepted, f"TIMITDataModule takes no {sorted(keys - accepted)}"
