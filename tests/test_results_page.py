"""The committed results page agrees with the generated reports it is built from.

``docs/RESULTS.md`` and the README's Biased-MNIST table are built by ``docs/build_results.py``
from ``docs/results/<sweep>/``; a hand edit of either, or a report regenerated without the page,
shows up here as a mismatch (no runs needed: only committed files are read).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from test_results_report import sweep  # noqa: F401 (the fake sweep fixture)

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


def test_a_section_lacking_runs_of_its_committed_table_is_joined_with_it(
    build_results, tmp_path, monkeypatch
) -> None:
    """Local runs that lack finished runs of the committed runs.csv (a sweep over several
    sessions): make_report joins the committed tables (prior=); local runs that cover them, or
    --no-prior: the report of the local runs alone, as before."""
    runs, docs = tmp_path / "runs", tmp_path / "docs"

    def local_sweep(name: str, done: list[str]) -> None:
        (runs / name).mkdir(parents=True)
        listed = [{"run": r} for r in done]
        (runs / name / "sweep.json").write_text(json.dumps({"name": name, "runs": listed}))
        for r in done:
            (runs / name / r).mkdir()
            (runs / name / r / "metrics.json").write_text('{"config": {}, "splits": {}}')

    out = docs / "results" / "s"
    out.mkdir(parents=True)
    (out / "runs.csv").write_text(
        "sweep,run,status\na,r1,done\na,r2,done\nb,r1,done\nb,r2,failed\n"
    )
    monkeypatch.setattr(build_results, "DOCS", docs)
    monkeypatch.setattr(build_results, "NOTES", docs / "results_notes")
    called = []
    monkeypatch.setattr(build_results, "make_report", lambda *a, **k: called.append((a, k)))
    sec = build_results.Section("s", "S", ("a", "b"))
    local_sweep("a", ["r1", "r2"])  # b's runs were made in another session
    build_results.build_report(sec, runs)
    assert called == [((runs / "a", out), {"notes": None, "prior": out})]
    local_sweep("b", ["r1"])  # every run the table holds as done is here
    build_results.build_report(sec, runs)
    assert called[1] == (([runs / "a", runs / "b"], out), {"notes": None})
    (out / "runs.csv").write_text("sweep,run,status\na,r1,done\na,r3,done\n")
    build_results.build_report(sec, runs, use_prior=False)  # --no-prior: a new protocol
    assert called[2] == (([runs / "a", runs / "b"], out), {"notes": None})


def test_readme_table_is_the_generated_one(build_results) -> None:
    readme = (ROOT / "README.md").read_text()
    table = build_results.readme_table().strip().splitlines()
    from debias.sweep.config import load_sweep

    methods = load_sweep(ROOT / "sweeps/biased_mnist_cpu.yaml").grid["method"]
    assert len(table) == 2 + len(methods)  # header, rule, one row per method of the CPU sweep
    missing = [row for row in table if row not in readme.splitlines()]
    assert not missing, f"README rows differ from docs/build_results.py --readme-table: {missing}"


def _copy_docs(tmp_path: Path) -> Path:
    """docs/results and docs/results_notes as committed; figures as empty files (the page only
    links them)."""
    import shutil

    docs = tmp_path / "docs"
    shutil.copytree(ROOT / "docs/results", docs / "results", ignore=shutil.ignore_patterns("*.png"))
    for png in (ROOT / "docs/results").rglob("*.png"):
        (docs / png.relative_to(ROOT / "docs")).touch()
    shutil.copytree(ROOT / "docs/results_notes", docs / "results_notes")
    return docs


def test_page_rebuilt_from_the_committed_tables_is_the_committed_page(
    build_results, tmp_path, monkeypatch
) -> None:
    """No run folders: every report, its CSVs and docs/RESULTS.md come out of
    docs/build_results.py as committed (issue 35). A hand edit of the page or a report, a notes
    file changed without rebuilding, or a paired CSV that disagrees with its table fails here."""
    docs = _copy_docs(tmp_path)
    monkeypatch.setattr(build_results, "DOCS", docs)
    monkeypatch.setattr(build_results, "NOTES", docs / "results_notes")
    build_results.main(["--runs", str(tmp_path / "no_runs")])
    assert (docs / "RESULTS.md").read_text() == (ROOT / "docs/RESULTS.md").read_text(), (
        "docs/RESULTS.md differs from what docs/build_results.py makes of the committed tables: "
        "run python docs/build_results.py"
    )
    for path in sorted((docs / "results").rglob("*")):
        if path.is_file() and path.suffix in (".md", ".csv", ".json"):
            committed = ROOT / "docs" / path.relative_to(docs)
            assert path.read_bytes() == committed.read_bytes(), f"{committed} is not rebuilt as is"


def test_a_section_with_runs_csv_is_rebuilt_from_it(
    build_results,
    sweep,  # noqa: F811 (the fixture imported above)
    tmp_path,
    monkeypatch,
):
    """A report written with its per-run tables (runs.csv, ...) is rebuilt from them alone, with
    the notes file of the day, when its runs are gone."""
    import shutil

    from test_results_report import add_representation

    from debias.report.report import make_report

    add_representation(sweep)
    docs = tmp_path / "docs"
    (docs / "results_notes").mkdir(parents=True)
    notes = docs / "results_notes" / "fake.md"
    notes.write_text("## What we learned\n\nFirst notes.\n")
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "0")
    monkeypatch.setattr(build_results, "DOCS", docs)
    monkeypatch.setattr(build_results, "NOTES", docs / "results_notes")
    sec = build_results.Section("fake", "Fake", ("sweep",))
    runs = sweep.parent
    report = build_results.build_report(sec, runs)  # from the runs: make_report
    first = report.read_text()
    assert (docs / "results/fake/runs.csv").is_file() and "First notes." in first
    expected = make_report(sweep, tmp_path / "direct", notes=notes)["report"].read_text()
    assert first == expected
    shutil.rmtree(sweep)
    notes.write_text("## What we learned\n\nSecond notes.\n")
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "86400")
    again = build_results.build_report(sec, runs).read_text()
    assert again == first.replace("First notes.", "Second notes.")
