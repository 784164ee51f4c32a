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
    for name, title in build_results.SECTIONS:
        report = ROOT / "docs/results" / name / "report.md"
        assert report.is_file(), f"no committed report for sweep {name}"
        assert build_results.section(name, title, report) in page, (
            f"docs/RESULTS.md's section for {name} differs from docs/results/{name}/report.md "
            "and its notes: run python docs/build_results.py"
        )


def test_readme_table_is_the_generated_one(build_results) -> None:
    readme = (ROOT / "README.md").read_text()
    table = build_results.readme_table().strip().splitlines()
    from debias.sweep.config import load_sweep

    methods = load_sweep(ROOT / "sweeps/biased_mnist_cpu.yaml").grid["method"]
    assert len(table) == 2 + len(methods)  # header, rule, one row per method of the CPU sweep
    missing = [row for row in table if row not in readme.splitlines()]
    assert not missing, f"README rows differ from docs/build_results.py --readme-table: {missing}"
