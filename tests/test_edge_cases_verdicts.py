"""Issue 16: the default detector combines its parts validly, explanations agree with p-values,
explicit calibration rows, NaN policy from the profile, and guard.check."""

from __future__ import annotations

import re

import numpy as np
import pytest

from guarded_serving import Guard
from guarded_serving.edge_cases import RowVerdict, build_profile
from guarded_serving.edge_cases.cli import main as profile_main
from guarded_serving.edge_cases.cli import rows_needed
from guarded_serving.errors import InvalidInputError


def _correlated(n, seed, p=6):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 1))
    return z + 0.3 * rng.normal(size=(n, p))  # strongly correlated features


@pytest.fixture(scope="module")
def prof():
    return build_profile(_correlated(6000, 0), calibration_fraction=0.25)


def _flag_rate(prof, name, X, fpr):
    return float((prof.calibrator(name).p_values(prof.detector(name).outlyingness(X)) <= fpr).mean())


def test_in_range_unusual_rows_flagged_as_by_the_best_part(prof):
    """Rows whose values are each in range but combine unusually are flagged about as often as by Mahalanobis alone."""
    X = _correlated(2000, 1)
    rng = np.random.default_rng(2)
    for j in range(X.shape[1]):  # break the correlation, keep every marginal
        X[:, j] = rng.permutation(X[:, j])
    for fpr in (0.01, 0.05):
        best = max(_flag_rate(prof, "mahalanobis", X, fpr), _flag_rate(prof, "tail", X, fpr))
        assert _flag_rate(prof, "combined", X, fpr) >= best - 0.02


def test_clean_flag_rate_stays_at_the_configured_rate(prof):
    """On fresh in-distribution rows the default flags at most about edge_fpr (binomial band)."""
    X = _correlated(20000, 3)
    for fpr in (0.01, 0.05):
        rate = _flag_rate(prof, "combined", X, fpr)
        assert rate <= fpr + 3 * np.sqrt(fpr * (1 - fpr) / len(X)) + 0.003


def test_combination_is_never_dead_at_the_smallest_reachable_rate(prof):
    """A row far past every calibration row in one part gets p = 1/(n+1), the smallest reachable."""
    row = _correlated(1, 4)
    row[0, 0] = 1e4
    p = prof.calibrator().p_values(prof.detector().outlyingness(row))[0]
    assert p == pytest.approx(1 / (prof.n_calibration + 1))


def test_a_user_combination_is_calibrated_the_same_way(prof):
    """edge_detector='tail+mahalanobis+knn' scores through the guard and keeps the false-positive rate."""
    g = Guard(name="combo", profile=prof, edge_detector="tail+mahalanobis+knn", edge_fpr=0.05, operational=False)
    verdicts = g.check(_correlated(2000, 5))
    assert 0.02 <= np.mean([v.flagged for v in verdicts]) <= 0.08
    assert set(verdicts[0].part_p_values) == {"tail", "mahalanobis", "knn"}


def test_bad_combination_name_is_refused():
    """An unknown part in edge_detector is a clear configuration error."""
    from guarded_serving.errors import ConfigError

    with pytest.raises(ConfigError, match="edge_detector"):
        Guard(name="bad", edge_detector="tail+forest")


def test_explanations_agree_with_part_p_values(prof):
    """A reason that compares a row with the calibration rows says what the part's p-value says."""
    g = Guard(name="agree", profile=prof, edge_fpr=0.05, operational=False)
    X = _correlated(400, 6)
    X[:, 1] = -X[:, 1]  # in range, against the correlation
    checked = 0
    for v in g.check(X):
        if not v.flagged:
            assert v.reasons == ()
            continue
        text = " ".join(v.reasons)
        m = re.search(r"Mahalanobis distance [\d.e+]+, (beyond all|reached or exceeded by (\d+) of) (\d+) calibration",
                      text)
        if m is None:
            continue
        n = int(m.group(3))
        if m.group(1) == "beyond all":
            assert v.part_p_values["mahalanobis"] == pytest.approx(1 / (n + 1))
        else:
            assert v.part_p_values["mahalanobis"] == pytest.approx((int(m.group(2)) + 1) / (n + 1))
        checked += 1
    assert checked >= 10


def test_explanation_leads_with_the_part_that_drove_the_verdict(prof):
    """An in-range row flagged by Mahalanobis is led by the combination; an out-of-range value by the feature."""
    g = Guard(name="lead", profile=prof, edge_fpr=0.05, operational=False)
    row = np.zeros((1, 6))
    row[0, :3], row[0, 3:] = 2.0, -2.0  # each in range; together far off the correlation
    [v] = g.check(row)
    assert v.flagged and v.reasons[0].startswith("each value is within its training range, but the combination")
    row = _correlated(1, 7)
    row[0, 2] = 1e3
    [v] = g.check(row)
    assert v.flagged and v.reasons[0].startswith("f2=1000 is above every training value")


def test_guard_check_returns_every_rows_verdict_without_calling_the_model(prof):
    """guard.check gives p-values for unflagged rows too, flags and reasons, and never calls the model."""
    calls = []
    g = Guard(name="screen", profile=prof, edge_fpr=0.01, operational=False)
    model = g.wrap(lambda x: calls.append(x) or x)
    X = _correlated(5, 8)
    X[3, 0] = 50.0
    verdicts = g.check(X)
    assert calls == [] and len(verdicts) == 5 and all(isinstance(v, RowVerdict) for v in verdicts)
    assert [v.flagged for v in verdicts] == [False, False, False, True, False]
    assert all(0 < v.p_value <= 1 for v in verdicts) and verdicts[0].p_value > 0.01
    assert "f0=50 is above every training value" in verdicts[3].reasons[0]
    assert g.stats()["edge_cases"]["rows"] == 0  # screening is not traffic
    model(X)
    assert len(calls) == 1 and g.stats()["edge_cases"]["rows_flagged"] == 1


def test_guard_check_validates_like_the_request_path(prof):
    """A malformed input to guard.check is the same InvalidInputError a request gets."""
    g = Guard(name="screen2", profile=prof, operational=False)
    with pytest.raises(InvalidInputError, match="expected 6 features"):
        g.check(np.zeros((2, 3)))


def test_explicit_calibration_rows(tmp_path):
    """build_profile(calibration=...) fits on every row and calibrates on the given held-out rows."""
    X, C = _correlated(1000, 9), _correlated(300, 10)
    prof = build_profile(X, calibration=C)
    assert prof.header["n_rows"] == 1000 and prof.n_calibration == 300 and prof.header["calibration"] == "held out"
    np.save(tmp_path / "train.npy", X)
    np.save(tmp_path / "cal.npy", C)
    assert profile_main([str(tmp_path / "train.npy"), "--calibration", str(tmp_path / "cal.npy"),
                         "-o", str(tmp_path / "p.npz"), "--quiet"]) == 0


def test_cli_reports_reachable_rate_and_rows_needed(tmp_path, capsys):
    """The CLI report states the smallest reachable edge_fpr and the calibration rows a target rate needs."""
    np.save(tmp_path / "train.npy", _correlated(500, 11))
    np.save(tmp_path / "cal.npy", _correlated(49, 12))
    assert profile_main([str(tmp_path / "train.npy"), "--calibration", str(tmp_path / "cal.npy"),
                         "-o", str(tmp_path / "p.npz"), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "calibration: 49 rows; smallest reachable edge_fpr 1/(n+1) = 0.02" in out
    assert "edge_fpr=0.01 needs >= 99" in out and "edge_fpr=0.05 needs >= 19" in out
    assert rows_needed(0.001) == 999


def test_cli_refuses_calibration_with_other_columns(tmp_path, capsys):
    """Calibration rows with another column count are refused, naming both files' columns."""
    np.save(tmp_path / "train.npy", _correlated(200, 13))
    np.save(tmp_path / "cal.npy", _correlated(50, 14, p=4))
    assert profile_main([str(tmp_path / "train.npy"), "--calibration", str(tmp_path / "cal.npy"),
                         "-o", str(tmp_path / "p.npz"), "--quiet"]) == 2
    assert "has 4 columns" in capsys.readouterr().err


@pytest.fixture(scope="module")
def nan_guard():
    X = _correlated(3000, 15)
    X[np.random.default_rng(16).random(3000) < 0.05, 2] = np.nan
    prof = build_profile(X)
    assert prof.missing_rate[2] > 0 and prof.missing_rate[0] == 0
    g = Guard(name="nan", profile=prof, operational=False)
    return g, g.wrap(lambda x: np.zeros(len(x)))


class TestNaNFollowsTheProfile:
    """allow_nan defaults to the profile's per-feature training missing rates."""

    def test_nan_accepted_where_training_had_missing_values(self, nan_guard):
        """A NaN in a feature that was missing in training is served and scored."""
        g, model = nan_guard
        row = _correlated(2, 17)
        row[1, 2] = np.nan
        assert len(model(row)) == 2 and not g.check(row)[1].flagged

    def test_nan_refused_elsewhere_naming_row_and_feature(self, nan_guard):
        """A NaN where training never had one is a 400 naming the row and the feature."""
        _, model = nan_guard
        row = _correlated(3, 18)
        row[2, 0] = np.nan
        with pytest.raises(InvalidInputError, match=r"row 2, feature 0 \(f0\) is NaN; training data never had"):
            model(row)

    def test_missing_rate_counts_calibration_rows(self):
        """A feature missing only in calibration rows still has a missing rate (NaN accepted, finite scores)."""
        X, C = _correlated(500, 19), _correlated(100, 20)
        C[:5, 4] = np.nan
        prof = build_profile(X, calibration=C)
        assert prof.missing_rate[4] == pytest.approx(5 / 600)
        assert np.isfinite(prof.arrays["cal_combined"]).all()


def test_explanation_is_built_when_read(prof):
    """A flagged call carries its verdict at once; the reasons come when read, or with a response's header."""
    from types import SimpleNamespace

    from guarded_serving.call import Call
    from guarded_serving.keys import EDGE_VERDICT

    g = Guard(name="lazy", profile=prof, operational=False)
    comp = g.component("edge_cases")
    x = _correlated(2, 21)
    x[1, 0] = 80.0
    call = Call((x,), {}, x, "x", 0)
    comp.before_call(call)
    verdict = call.state[EDGE_VERDICT]
    assert verdict["flagged_rows"] == [1] and "X-Guard-Edge-Reason" not in call.headers
    assert "f0=80 is above every training value" in verdict["explanation"]
    assert verdict["reasons"][1][0].startswith("f0=80")
    response = SimpleNamespace(headers={})
    call = Call((x,), {}, x, "x", 0, response)
    comp.before_call(call)
    assert response.headers["X-Guard-Edge-Reason"].startswith("row 1 (p=")
