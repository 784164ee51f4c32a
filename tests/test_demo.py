"""``debias demo``: falls back to scikit-learn's digits offline, says so, and shows the shortcut."""

from __future__ import annotations

import sys
import types

from debias.cli import main


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
    # the shortcut in numbers: the biased test is far above the unbiased test
    assert "biased test (colour = digit)" in text and "unbiased test (colours ~uniform)" in text
    import json

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["dataset"] == "digits"
    biased = metrics["splits"]["test_biased"]["accuracy"]
    unbiased = metrics["splits"]["test"]["unbiased_accuracy"]
    assert biased > unbiased + 0.3
    assert (out / "shortcut.png").stat().st_size > 10_000
