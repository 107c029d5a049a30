"""The ``marketplace`` console script: its help lists every command, and each command's
own ``--help`` works (in this process: one import of each command module, no work)."""

from __future__ import annotations

import pytest

from marketplace import cli


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: marketplace")
    listed = [line.split()[0] for line in out.split("commands:\n", 1)[1].splitlines()[:-2] if line]
    assert listed == list(cli.COMMANDS)
    assert set(cli.COMMANDS) == {
        "sample", "ingest", "promote", "evaluate", "monitor", "ui", "export-live", "predict",
        "serve", "stack",
    }  # fmt: skip


@pytest.mark.parametrize("name", list(cli.COMMANDS))
def test_each_command_has_its_own_help(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main([name, "--help"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: marketplace {name}")
    assert callable(cli.load_command(name))


def test_an_unknown_command_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main(["no-such-command"])
    assert exit_.value.code == 2
    assert "invalid choice: 'no-such-command'" in capsys.readouterr().err
