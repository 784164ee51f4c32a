"""``debias demo``: falls back to scikit-learn's digits offline, says so, and shows the shortcut."""

from __future__ import annotations

import sys
import types

import pytest

from debias.cli import main


@pytest.mark.slow
def test_demo_offline_fallback_runs_on_digits(tmp_path, monkeypatch, capsys):
    attempts = []

    def offline(**kwargs):
        attempts.append(kwargs)
        raise RuntimeError("no network")

    # A stand-in torchvision whose download fails: tests never touch the network.
    monkeypatch.setitem(
        sys.modules,
        "torchvision",
        types.SimpleNamespace(datasets=types.SimpleNamespace(MNIST=offline)),
    )
    out = tmp_path / "demo"
    rc = main(["demo", "--root", str(tmp_path / "empty"), "--out", str(out), "--device", "cpu"])
    assert rc == 0
    text = capsys.readouterr().out
    assert attempts, "the demo should try a download before falling back"
    first = text.splitlines()[0]
    assert "scikit-learn's 1,797 real handwritten digits" in first and "DEBIAS_DATA" in first
    # both rows are printed: the shortcut and the cure
    assert "cross-entropy" in text and "group reweighting 1/n(y, b)" in text
    assert "biased test" in text and "unbiased test" in text
    import json

    # runs live under <out>/<dataset>/<method>: the fallback never collides with a real demo
    ce = json.loads((out / "digits" / "ce" / "metrics.json").read_text())
    cure = json.loads((out / "digits" / "reweight" / "metrics.json").read_text())
    assert ce["config"]["dataset"] == cure["config"]["dataset"] == "digits"
    assert ce["data"] == cure["data"]  # the same split for both
    biased = ce["splits"]["test_biased"]["accuracy"]
    unbiased = ce["splits"]["test"]["unbiased_accuracy"]
    assert biased > unbiased + 0.3
    assert (out / "digits" / "shortcut.png").stat().st_size > 10_000
    # a second demo reuses the finished runs instead of training again; --force is accepted
    capsys.readouterr()
    rc = main(["demo", "--root", str(tmp_path / "empty"), "--out", str(out), "--device", "cpu"])
    assert rc == 0 and "already finished" in capsys.readouterr().out
    from debias.cli import build_parser

    assert build_parser().parse_args(["demo", "--force"]).force is True


def test_accuracy_table_names_colours():
    from debias.demo import accuracy_table

    groups = [
        {"y": y, "b": b, "accuracy": 1.0 if y == b else 0.25} for y in range(2) for b in range(2)
    ]
    tab = accuracy_table(groups, ["red", "green"])
    assert list(tab.columns) == ["red", "green"] and tab.loc[1, "green"] == 1.0
    assert tab.loc[0, "green"] == 0.25 and list(accuracy_table(groups).columns) == [0, 1]
