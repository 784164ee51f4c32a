"""The committed results page agrees with the generated reports it is built from.

``docs/RESULTS.md`` and the README's Biased-MNIST table are built by ``docs/build_results.py``
from ``docs/results/<sweep>/``; a hand edit of either, or a report regenerated without the page,
shows up here as a mismatch (no runs needed: only committed files are read).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def build_results():
    spec = importlib.util.spec_from_file_location("build_results", ROOT / "docs/build_results.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_results_page_contains_every_committed_report(build_results) -> None:
    page = (ROOT / "docs/RESULTS.md").read_text()
    for sec in build_results.SECTIONS:
        report = ROOT / "docs/results" / sec.name / "report.md"
        if not report.is_file():
            # a sweep not run yet: the page says so, naming every folder it would read
            assert build_results.not_run(sec) in page, f"no report and no notice for {sec.name}"
            continue
        assert build_results.section(sec.name, sec.title, report) in page, (
            f"docs/RESULTS.md's section for {sec.name} differs from docs/results/{sec.name}/"
            "report.md and its notes: run python docs/build_results.py"
        )


def test_a_section_missing_a_companion_sweep_keeps_its_report(
    build_results, tmp_path, monkeypatch
) -> None:
    """With only the first of a section's sweeps present, nothing is regenerated."""
    sec = build_results.Section("s", "S", ("a", "b"))
    (tmp_path / "runs" / "a").mkdir(parents=True)
    (tmp_path / "runs" / "a" / "sweep.json").write_text("{}")
    docs = tmp_path / "docs"
    (docs / "results" / "s").mkdir(parents=True)
    (docs / "results" / "s" / "report.md").write_text("committed\n")
    monkeypatch.setattr(build_results, "DOCS", docs)
    called = []
    monkeypatch.setattr(build_results, "make_report", lambda *a, **k: called.append(a))
    assert build_results.build_report(sec, tmp_path / "runs") == docs / "results/s/report.md"
    assert called == [] and (docs / "results/s/report.md").read_text() == "committed\n"
    (tmp_path / "runs" / "b").mkdir()
    (tmp_path / "runs" / "b" / "sweep.json").write_text("{}")
    build_results.build_report(sec, tmp_path / "runs")
    assert called == [([tmp_path / "runs/a", tmp_path / "runs/b"], docs / "results/s")]


def test_readme_table_is_the_generated_one(build_results) -> None:
    readme = (ROOT / "README.md").read_text()
    table = build_results.readme_table().strip().splitlines()
    from debias.sweep.config import load_sweep

    methods = load_sweep(ROOT / "sweeps/biased_mnist_cpu.yaml").grid["method"]
    assert len(table) == 2 + len(methods)  # header, rule, one row per method of the CPU sweep
    missing = [row for row in table if row not in readme.splitlines()]
    assert not missing, f"README rows differ from docs/build_results.py --readme-table: {missing}"
