"""--help says what every flag does and its default, and the README shows the same text."""

from __future__ import annotations

import argparse
import runpy
import sys
from pathlib import Path

import pytest

from streamer import schema
from streamer.bench import e2e as bench
from streamer.bench import sinks as bench_sinks
from streamer.cli import ENV_HELP, EXIT_STATUS_HELP, HELP_WIDTH, build_parser
from streamer.tools.synopsis import BEGIN, END, render, replace_block
from streamer.tools.synopsis import main as synopsis_main

README = Path(__file__).resolve().parent.parent / "README.md"


def _parsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser(width=HELP_WIDTH)
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    found = {f"limitless-streamer {name}": p for name, p in sub.choices.items()}
    found.update({"bench": bench.build_parser(), "bench_sinks": bench_sinks.build_parser(),
                  "schema": schema.build_parser()})
    return found


def _options() -> list[tuple[str, argparse.Action]]:
    return [(f"{name} {'/'.join(action.option_strings) or action.dest}", action)
            for name, parser in _parsers().items() for action in parser._actions
            if not isinstance(action, argparse._HelpAction) and action.help != argparse.SUPPRESS]


@pytest.mark.parametrize(("where", "action"), _options(), ids=lambda v: str(v))
def test_help_every_flag_has_help_with_its_default(where: str, action: argparse.Action) -> None:
    assert action.help, f"{where}: no help text"
    takes_value = action.option_strings and action.nargs != 0
    if takes_value:
        assert "default" in action.help, f"{where}: help does not state the default"


def test_help_run_ends_with_exit_codes_and_environment() -> None:
    text = _parsers()["limitless-streamer run"].format_help()
    assert text.rstrip().endswith(f"{EXIT_STATUS_HELP}\n\n{ENV_HELP}".rstrip())
    for needle in ("  2  bad flags", "LIMITLESS_HMAC_SECRET", "LIMITLESS_API_KEY"):
        assert needle in text


def test_help_demo_states_its_own_metrics_port() -> None:
    text = _parsers()["limitless-streamer demo"].format_help()
    assert "127.0.0.1:0" in text and "9464" not in text


def test_readme_synopsis_matches_help() -> None:
    text = README.read_text(encoding="utf-8")
    assert BEGIN in text and END in text
    assert replace_block(text, render()) == text, (
        "README synopsis is out of date: run python -m streamer.tools.synopsis --write README.md"
    )


def test_synopsis_check_and_write(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stale = tmp_path / "README.md"
    stale.write_text(f"# x\n\n{BEGIN}\nold\n{END}\n\nafter\n", encoding="utf-8")
    assert synopsis_main(["--check", str(stale)]) == 1
    assert "--write" in capsys.readouterr().err
    assert synopsis_main(["--write", str(stale)]) == 0
    assert synopsis_main(["--check", str(stale)]) == 0
    assert stale.read_text(encoding="utf-8") == f"# x\n\n{BEGIN}\n{render()}{END}\n\nafter\n"


def test_schema_module_help_prints_help_not_the_schema(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "argv", ["python -m streamer.schema", "--help"])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_module("streamer.schema", run_name="__main__")
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: python -m streamer.schema") and "$defs" not in out


def test_bench_help_has_no_markup() -> None:
    for parser in (bench.build_parser(), bench_sinks.build_parser()):
        text = parser.format_help()
        assert "``" not in text and ":class:" not in text
