"""The wheel works outside the clone: built with `python -m build`, installed into a fresh virtualenv
(its dependencies seen from this environment, nothing downloaded), run from a folder outside the
repository: the shipped recipes are found by name, and `infer` tags images with an exported model."""
from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _run(args: list, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    # no PYTHONPATH: the repository's package must not be what runs
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    return subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _build_wheel(tmp: Path) -> Path:
    """The wheel of a copy of the sources (the build writes build/ and *.egg-info next to them)."""
    source = tmp / "source"
    shutil.copytree(REPO / "mlic_edge", source / "mlic_edge",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.so"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    proc = _run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", tmp / "dist", source], tmp)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    (wheel,) = (tmp / "dist").glob("mlic_edge-*.whl")
    return wheel


def _venv_with(wheel: Path, tmp: Path) -> Path:
    """A fresh virtualenv with the wheel alone installed; this environment's packages (torch,
    onnxruntime, ...) are seen through a .pth file, which puts them after the venv's own site dir."""
    root = tmp / "venv"
    venv.EnvBuilder(with_pip=False).create(root)
    python = root / "bin" / "python"
    proc = _run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index",
                 "--no-compile", wheel], tmp)
    assert proc.returncode == 0, proc.stderr[-3000:]
    own_site = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp).stdout.strip())
    (own_site / "zz_main_environment.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return root


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("wheel")
    return _venv_with(_build_wheel(tmp), tmp)


def test_the_installed_wheel_is_what_runs(installed, tmp_path):
    python = installed / "bin" / "python"
    proc = _run([python, "-c", "import mlic_edge, sys; print(mlic_edge.__file__)"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    where = Path(proc.stdout.strip()).resolve()
    assert where.is_relative_to(installed.resolve()), where
    assert not where.is_relative_to(REPO)
    shipped = where.parent / "configs"
    assert (shipped / "voc07_r101_448.yaml").is_file() and (shipped / "ablations" / "coco_r101_448_loss_bce.yaml").is_file()


def test_model_info_finds_a_shipped_recipe_by_name(installed, tmp_path):
    proc = _run([installed / "bin" / "mlic-edge", "model-info", "-c", "voc07_r101_448"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "GFLOPs (forward, batch 1)" in proc.stdout
    assert "14x14 = 196 tokens of 2048 channels" in proc.stdout   # ResNet101 @448, d_model 2048
    # an ablation inherits its base (base: ../coco_r101_448.yaml) inside the installed package
    code = ("from mlic_edge.config import Recipe; r = Recipe.load('ablations/coco_r101_448_encoder_none'); "
            "print(r.model.encoder, r.model.image_size, r.data.name)")
    proc = _run([installed / "bin" / "python", "-c", code], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["none", "448", "coco2014"]
    proc = _run([installed / "bin" / "mlic-edge", "model-info", "-c", "voc07_r101"], tmp_path)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "voc07_r101: no such recipe file or shipped recipe" in proc.stderr and "voc07_r101_448" in proc.stderr


def test_infer_tags_images_with_an_exported_model(installed, tmp_path, trained):
    images = tmp_path / "images"
    images.mkdir()
    for path in sorted(Path(trained["calib_dir"]).glob("*.png"))[:3]:
        shutil.copy(path, images / path.name)
    out = tmp_path / "preds.csv"
    proc = _run([installed / "bin" / "mlic-edge", "infer", images, "--model", trained["fp32"], "--out", out,
                 "--threshold", "0", "--no-progress"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with out.open() as f:
        rows = list(csv.DictReader(f))
    assert [Path(r["path"]).name for r in rows] == sorted(p.name for p in images.iterdir())
    scores = [c for c in rows[0] if c.startswith("score_")]
    assert len(scores) == 6
    for row in rows:
        assert row["error"] == "" and row["labels"].count(";") == 5   # threshold 0: every label
        assert all(0.0 <= float(row[c]) <= 1.0 for c in scores)
