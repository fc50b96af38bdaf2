"""`mohaq --help` names the toolkit and its commands in one line each; a
command's help starts with its own options and lists platforms and algorithms."""

from __future__ import annotations

import re

import pytest

from mohaq.cli import main
from mohaq.cli_help import DESCRIPTION
from mohaq.hardware.platform import describe_platforms
from mohaq.search.proposers import available_algorithms

COMMANDS = ("fit", "validate", "test", "cost", "search", "beacons", "export")


def _help(capsys: pytest.CaptureFixture, *args: str) -> str:
    with pytest.raises(SystemExit) as stopped:
        main([*args, "--help"])
    assert stopped.value.code == 0
    return capsys.readouterr().out


def test_the_main_help_describes_the_toolkit_and_each_command_in_one_line(
    capsys: pytest.CaptureFixture,
) -> None:
    text = _help(capsys)
    assert "Lightning Trainer command line tool" not in text
    assert " ".join(DESCRIPTION.split()) in " ".join(text.split())
    block = text.split("Available subcommands:")[1].split("\n\n")[0]
    rows = [line for line in block.splitlines()[2:]]  # after the "(required)" line
    assert [re.match(r"^    (\w+) ", row).group(1) for row in rows] == list(COMMANDS)
    for row in rows:  # one line each, a whole sentence
        assert row.rstrip().endswith("."), row
    assert "exit status:" in text and "5  platform error" in text
    assert "MOHAQ_DEBUG=1" in text


def test_a_command_help_starts_with_its_own_options_and_lists_platforms_and_algorithms(
    capsys: pytest.CaptureFixture,
) -> None:
    text = _help(capsys, "search")
    lines = text.splitlines()
    assert lines[0].startswith("usage: mohaq search -c CONFIG.yaml") and len(lines[0]) < 130
    sections = [line for line in lines if re.match(r"^\S.*:$", line)]
    assert sections[0] == "search options:"
    assert text.index("--checkpoint") < text.index("--model.cell") < text.index("--data.corpus_dir")
    # 706 lines before; about 300 now that the search has PTQ and metric options (wrapping
    # at 80 columns adds a few): far from the Trainer's hundreds of options.
    assert "--trainer.max_epochs" not in text and len(lines) < 360
    for name, description in describe_platforms():
        assert re.search(rf"^  {re.escape(name)}\s+{re.escape(description[:30])}", text, re.M), name
    for entry in available_algorithms():
        assert re.search(rf"^  {entry.name}\s+\S", text, re.M), entry.name


def test_training_commands_keep_the_trainer_options_after_their_own(
    capsys: pytest.CaptureFixture,
) -> None:
    text = _help(capsys, "test")
    assert text.splitlines()[2] == "Score a checkpoint or an exported model on a split."
    assert (
        text.index("--exported") < text.index("--model.cell") < text.index("--trainer.max_epochs")
    )


def test_a_bad_option_value_is_a_short_usage_error(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(["search", "--budget", "many"])
    assert stopped.value.code == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) <= 5 and err[0].startswith("usage: mohaq search -c CONFIG.yaml")
    assert 'error: Parser key "budget":' in err
