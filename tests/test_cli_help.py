"""Every option of every ``debias`` command says what it does; ``sweep --help`` points to the
YAML schema and gives the ``--jobs`` default."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from debias.cli import build_parser, main

DOCS = Path(__file__).resolve().parents[1] / "docs"


def subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def test_every_option_of_every_command_has_a_help_text():
    bare = [
        f"debias {name} {a.option_strings[0] if a.option_strings else a.dest}"
        for name, p in subcommands().items()
        for a in p._actions
        if not isinstance(a, argparse._HelpAction) and not (a.help or "").strip()
    ]
    assert not bare, f"options without help: {bare}"


@pytest.mark.parametrize(
    ("command", "needles"),
    [
        ("sweep", ["docs/SWEEPS.md", "default 1: one run at a time", "grid: {rho:"]),
        ("audit", ["--seed SEED", "same seed, same numbers", "folds of the linear probes (5)",
                   "where the encoder embeds the split"]),
        ("demo", ["171 of 55,000", "epochs of each of the two runs (2)"]),
    ],
)  # fmt: skip
def test_help_texts(command, needles, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    for needle in needles:
        assert needle in out, needle


def test_the_sweep_schema_page_documents_every_top_level_key():
    from debias.sweep.config import SWEEP_KEYS
    from debias.sweep.search import SEARCH_KEYS

    page = (DOCS / "SWEEPS.md").read_text()
    for key in (*SWEEP_KEYS, *SEARCH_KEYS):
        assert f"\n  {key}:" in page or f"\n{key}:" in page or f"| `{key}` |" in page, key


def test_the_sweep_schema_page_examples_are_valid_sweeps():
    import re

    import yaml

    from debias.sweep.config import SweepSpec

    blocks = re.findall(r"```yaml\n(.*?)```", (DOCS / "SWEEPS.md").read_text(), re.S)
    grid, search = (yaml.safe_load(b) for b in blocks)
    runs = SweepSpec.from_dict(grid).expand()
    assert len(runs) == 18 and runs[0].name == "rho=0.997/method=ce/seed=0"
    runs = SweepSpec.from_dict({"name": "s", **search}).expand()
    assert len(runs) == 24 and {r.train_config("x").method for r in runs} == {
        "ce", "groupdro", "lff"
    }  # fmt: skip
