"""The notebooks run headless, top to bottom, in a kernel of this very Python (the venv's).

``02_sweep_analysis`` runs against a tiny sweep made here (CE and ConTeX x 2 seeds x 1 rho on
the ``digits`` data, 1 epoch of 2 steps); its paired-test table is checked against the runs'
``metrics.json``. ``01_biased_mnist_tour`` needs real MNIST under ``$DEBIAS_DATA``; it asserts
the PROTOCOLS bias-conflicting counts itself, and the saved table is checked here too.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel", reason="the notebooks run in an ipykernel kernel")

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
KERNEL = "debias-test-venv"


@pytest.fixture(scope="module")
def kernel_env(tmp_path_factory):
    """A kernelspec whose argv is this interpreter, found through JUPYTER_PATH."""
    root = tmp_path_factory.mktemp("jupyter")
    spec = root / "kernels" / KERNEL
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "debias test (venv)",
                "language": "python",
            }
        )
    )
    # Headless: plain Agg, no GUI and no inline backend needed.
    return {"JUPYTER_PATH": str(root), "MPLBACKEND": "Agg"}


def execute(name: str, env: dict[str, str], monkeypatch, cwd: Path) -> nbformat.NotebookNode:
    """Run a notebook (outputs are not written back) and check which Python ran it."""
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    # Committed with the outputs of a real run (for readers); executed here from a clean slate.
    for c in nb.cells:
        if c.cell_type == "code":
            c.outputs, c.execution_count = [], None
    first_code = next(c for c in nb.cells if c.cell_type == "code")
    assert "parameters" in first_code.metadata.get("tags", [])
    nb.cells.append(nbformat.v4.new_code_cell("import sys; print(sys.executable)"))
    client = nbclient.NotebookClient(
        nb, kernel_name=KERNEL, timeout=300, resources={"metadata": {"path": str(cwd)}}
    )
    client.execute()
    printed = "".join(o.get("text", "") for o in nb.cells[-1].outputs)
    assert printed.strip() == sys.executable
    return nb


@pytest.mark.parametrize("path", sorted(NOTEBOOKS.glob("*.ipynb")), ids=lambda p: p.name)
def test_committed_notebooks_show_their_figures_and_stay_small(path):
    """A reader on GitHub sees executed outputs (figures included) without an error in them, in
    a file small enough to review; every parameter comes from DEBIAS_DATA or DEBIAS_NB_*."""
    nb = nbformat.read(path, as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert any("image/png" in o.get("data", {}) for o in outputs), "no figure stored"
    assert not [o for o in outputs if o.output_type == "error"]
    assert all(c.execution_count for c in nb.cells if c.cell_type == "code"), "not run in order"
    assert path.stat().st_size < 1_000_000
    params = next(c for c in nb.cells if c.cell_type == "code").source
    names = set(re.findall(r"environ(?:\.get)?\(\s*[\"'](DEBIAS_\w+)", params))
    assert names and all(n == "DEBIAS_DATA" or n.startswith("DEBIAS_NB_") for n in names), names


@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory):
    from debias.sweep import run_sweep

    out = tmp_path_factory.mktemp("nbsweep") / "sweep"
    result = run_sweep(
        {
            "name": "tiny",
            "base": {
                "dataset": "digits",
                "model": "smallconvnet",
                "epochs": 1,
                "linear_epochs": 1,
                "max_steps": 2,
                "batch_size": 32,
                "rho": 0.99,
                "device": "cpu",
            },
            "grid": {"method": ["ce", "contex"], "seed": [0, 1]},
        },
        jobs=2,
        out=out,
        log=lambda m: None,
    )
    assert result.ok, result.runs
    return out


@pytest.mark.slow
def test_sweep_analysis_notebook(tiny_sweep, kernel_env, monkeypatch, tmp_path):
    out = tmp_path / "nb_out"
    env = kernel_env | {
        "DEBIAS_NB_SWEEP_DIR": str(tiny_sweep),
        "DEBIAS_NB_COMPARE": "contex,ce",
        "DEBIAS_NB_OUT": str(out),
    }
    nb = execute("02_sweep_analysis.ipynb", env, monkeypatch, tmp_path)
    outputs = [o for c in nb.cells for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    # The report's three figures and the per-seed plot are shown as images.
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 4
    for fig in ("accuracy_vs_bias", "group_heatmap", "convergence", "per_seed"):
        assert (out / f"{fig}.png").stat().st_size > 5_000, fig
    paired = pd.read_csv(out / "paired_tests.csv")
    assert len(paired) == 1 and paired.loc[0, "rho"] == 0.99 and paired.loc[0, "n_pairs"] == 2

    def unbiased(method: str, seed: int) -> float:
        m = json.loads((tiny_sweep / f"method={method}/seed={seed}/metrics.json").read_text())
        return 100 * m["splits"]["test"]["unbiased_accuracy"]

    diffs = [unbiased("contex", s) - unbiased("ce", s) for s in (0, 1)]
    assert paired.loc[0, "mean diff (A-B)"] == pytest.approx(sum(diffs) / 2)
    assert paired.loc[0, "mean contex"] == pytest.approx(
        (unbiased("contex", 0) + unbiased("contex", 1)) / 2
    )
    assert paired.loc[0, "test"] == "paired t"


@pytest.mark.slow
def test_biased_mnist_tour_notebook(kernel_env, monkeypatch, tmp_path):
    from debias.data.mnist import load_mnist

    data = os.environ.get("DEBIAS_DATA")
    try:
        if not data:
            raise FileNotFoundError("DEBIAS_DATA is not set")
        load_mnist("test", root=data)
    except FileNotFoundError as exc:
        first = str(exc).splitlines()[0]
        pytest.skip(f"the tour needs real MNIST under $DEBIAS_DATA ({data!r}): {first}")
    out = tmp_path / "nb_out"
    env = kernel_env | {
        "DEBIAS_DATA": str(Path(data).resolve()),
        "DEBIAS_NB_RHOS": "0.999,0.99",
        "DEBIAS_NB_OUT": str(out),
    }
    nb = execute("01_biased_mnist_tour.ipynb", env, monkeypatch, tmp_path)
    outputs = [o for c in nb.cells for o in c.get("outputs", [])]
    assert sum("image/png" in o.get("data", {}) for o in outputs) == 5
    counts = pd.read_csv(out / "conflicting_counts.csv")
    assert counts["bias-conflicting"].tolist() == [63, 606]  # PROTOCOLS §1 check
    assert counts["images"].tolist() == [60_000, 60_000]
    for fig in ("palette", "samples_train", "samples_test", "samples_conflicting", "counts"):
        assert (out / f"{fig}.png").stat().st_size > 2_000, fig


@pytest.mark.slow
def test_embedding_audit_notebook(kernel_env, monkeypatch, tmp_path):
    # The offline digits data keeps this fast; the notebook's default is real Biased-MNIST.
    out = tmp_path / "nb03"
    env = kernel_env | {
        "DEBIAS_NB_OUT": str(out),
        "DEBIAS_NB_DATASET": "digits",
        "DEBIAS_NB_EPOCHS": "1",
        "DEBIAS_NB_MAX_STEPS": "3",
        "DEBIAS_NB_TRAIN_LIMIT": "0",
    }
    nb = execute("03_embedding_audit.ipynb", env, monkeypatch, tmp_path)
    outputs = [o for c in nb.cells for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    for name in ("ce", "reweight"):
        assert (out / name / "embeddings.npz").exists()
        audit = json.loads((out / f"audit_{name}" / "audit.json").read_text())
        leak = audit["bias_leakage"]
        assert 0.0 <= leak <= 1.0
        md = (out / f"audit_{name}" / "audit.md").read_text()
        assert f"{leak:.4f}" in md or f"{leak:.3f}" in md
    assert (out / "projections.png").stat().st_size > 5_000


@pytest.mark.slow
def test_audit_pretrained_encoder_notebook(kernel_env, monkeypatch, tmp_path):
    from debias.data.root import data_root

    utk = data_root() / "utkface" / "crop_part1"
    if not utk.is_dir():
        pytest.skip(f"the notebook's demo table needs real UTKFace under $DEBIAS_DATA ({utk})")
    out = tmp_path / "nb04"
    env = kernel_env | {
        "DEBIAS_DATA": str(data_root().resolve()),
        "DEBIAS_CACHE": str(tmp_path / "cache"),
        "DEBIAS_NB_OUT": str(out),
        "DEBIAS_NB_N": "200",
        "DEBIAS_NB_N_TRAIN": "300",
        "DEBIAS_NB_EPOCHS": "1",
    }
    nb = execute("04_audit_pretrained_encoder.ipynb", env, monkeypatch, tmp_path)
    outputs = [o for c in nb.cells for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    printed = "".join(o.get("text", "") for o in outputs)
    # no weights file: an encoder trained here, audited beside its untrained copy
    assert "trained narrowresnet for 1 epochs on 300 images" in printed
    assert "untrained: Embeddings(n=200, dim=128" in printed
    table = pd.read_csv(out / "metadata.csv")
    assert table["split"].value_counts().to_dict() == {"train": 300, "val": 300, "test": 200}
    assert table["filename"].is_unique  # the splits are disjoint
    test = table[table["split"] == "test"]
    with np.load(out / "embeddings.npz") as f:
        assert f["Z"].shape == (200, 128)  # NarrowResNet's feature
        assert f["targets"].tolist() == test["y"].tolist()
        assert f["bias"].tolist() == test["a"].tolist()
        assert f["aligned_groups"].tolist() == [[0, 0], [1, 1]]
    metrics = json.loads((out / "encoder" / "metrics.json").read_text())
    assert metrics["data"]["test"]["n"] == 200 and metrics["epochs_run"] == 1
    audit = json.loads((out / "audit" / "audit.json").read_text())
    assert 0.0 <= audit["bias_leakage"] <= 1.0 and audit["overall"]["n"] == 200
