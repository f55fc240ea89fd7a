"""Tests for guarded_serving.edge_cases.cli: the `profile` subcommand on real files."""

import argparse
import subprocess
import sys

import numpy as np

from guarded_serving.edge_cases import load_profile
from guarded_serving.edge_cases.cli import add_subparser, main


def test_csv_with_header_categorical_by_name_and_missing(tmp_path):
    """A CSV with a header, NA fields and a categorical column builds a profile with those names."""
    rng = np.random.default_rng(0)
    lines = ["width,height,colour"]
    for i in range(3000):
        h = "NA" if i % 40 == 0 else f"{rng.normal():.4f}"
        lines.append(f"{rng.normal():.4f},{h},{rng.integers(0, 3)}")
    (tmp_path / "d.csv").write_text("\n".join(lines) + "\n")
    assert main([str(tmp_path / "d.csv"), "-o", str(tmp_path / "p.npz"), "--categorical", "colour", "--quiet"]) == 0
    prof = load_profile(tmp_path / "p.npz")
    assert prof.feature_names == ["width", "height", "colour"] and prof.categorical == (2,)
    assert 0.01 < prof.missing_rate[1] < 0.04


def test_npy_with_predictions_as_module(tmp_path):
    """python -m guarded_serving.edge_cases.cli reads .npy data and predictions."""
    X = np.random.default_rng(1).normal(size=(2000, 4))
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "pred.npy", X[:, 0] > 0)
    r = subprocess.run([sys.executable, "-m", "guarded_serving.edge_cases.cli", str(tmp_path / "X.npy"), "-o",
                        str(tmp_path / "p.npz"), "--predictions", str(tmp_path / "pred.npy")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "sha256" in r.stdout and load_profile(tmp_path / "p.npz").reference_predictions is not None


def test_bad_inputs_exit_2_with_message(tmp_path, capsys):
    """A non-numeric CSV field or an unknown categorical column exits 2 naming the problem."""
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n3,red\n")
    assert main([str(tmp_path / "bad.csv"), "-o", str(tmp_path / "p.npz"), "--quiet"]) == 2
    assert "'red' is not a number" in capsys.readouterr().err
    np.save(tmp_path / "X.npy", np.zeros((10, 2)))
    assert main([str(tmp_path / "X.npy"), "-o", str(tmp_path / "p.npz"), "--categorical", "zz"]) == 2
    assert "'zz' is neither" in capsys.readouterr().err


def test_add_subparser():
    """add_subparser registers `profile` with a callable func."""
    ap = argparse.ArgumentParser()
    add_subparser(ap.add_subparsers())
    args = ap.parse_args(["profile", "x.npy", "-o", "p.npz"])
    assert callable(args.func) and args.calibration_fraction == 0.2


def test_csv_over_many_chunks_shows_a_progress_bar(tmp_path, capsys):
    """A CSV read in several chunks profiles every row, with a progress bar that reaches 100%."""
    X = np.random.default_rng(2).normal(size=(2500, 3))
    np.savetxt(tmp_path / "d.csv", X, delimiter=",", fmt="%.5f")
    assert main([str(tmp_path / "d.csv"), "-o", str(tmp_path / "p.npz"), "--chunk-rows", "1000"]) == 0
    err = capsys.readouterr().err
    assert "profile [" in err and "100.0% 2,500 rows" in err
    prof = load_profile(tmp_path / "p.npz")
    assert prof.header["n_rows_total"] == 2500


class TestKinds:
    def test_text_lines_and_jsonl(self, tmp_path):
        """--kind text reads one text per line (or JSONL) and stores the text view in the profile."""
        import json

        from tests.test_views import sentences

        texts = sentences(400)
        (tmp_path / "t.txt").write_text("\n".join(texts))
        (tmp_path / "t.jsonl").write_text("\n".join(json.dumps({"text": t}) for t in texts))
        for name in ("t.txt", "t.jsonl"):
            assert main([str(tmp_path / name), "-o", str(tmp_path / "p.npz"), "--kind", "text", "--quiet"]) == 0
            prof = load_profile(tmp_path / "p.npz")
            assert prof.view.kind == "text" and prof.feature_names[0] == "n_chars"

    def test_records_csv_with_text_categories(self, tmp_path):
        """--kind records reads a CSV whose text fields are categorical; unseen categories read as -1."""
        rows = "\n".join(f"{i % 9},{'red' if i % 3 else 'blue'}" for i in range(300))
        (tmp_path / "r.csv").write_text("size,colour\n" + rows)
        assert main([str(tmp_path / "r.csv"), "-o", str(tmp_path / "p.npz"), "--kind", "records", "--quiet"]) == 0
        view = load_profile(tmp_path / "p.npz").view
        assert view.feature_names_ == ["size", "colour"] and view.categorical_ == (1,)
        assert view.transform([{"size": 2.0, "colour": "green"}])[0].tolist() == [2.0, -1.0]

    def test_wrong_file_for_kind_names_it(self, tmp_path, capsys):
        """An array kind given a text file is an error naming the expected formats."""
        (tmp_path / "x.txt").write_text("a\nb\n")
        assert main([str(tmp_path / "x.txt"), "-o", str(tmp_path / "p.npz"), "--kind", "array"]) == 2
        assert "reads .npy or .npz arrays" in capsys.readouterr().err
