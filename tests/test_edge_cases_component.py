"""Tests for guarded_serving.edge_cases.component: the edge-case component inside a Guard (in process)."""

import numpy as np
import pytest

from guarded_serving import ConfigError, Guard, InvalidInputError, RejectedInputError
from guarded_serving.edge_cases import build_profile
from guarded_serving.edge_cases.component import merge_rows
from guarded_serving.keys import EDGE_P_VALUES, INPUT_SCHEMA, REFERENCE
from guarded_serving.testing import in_memory_tracer_provider


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    n = 6000
    X = np.c_[np.abs(rng.normal(10, 2, size=(n, 3))), rng.choice(3, n)]
    X[rng.random(n) < 0.05, 1] = np.nan
    return X


@pytest.fixture(scope="module")
def profile_path(data, tmp_path_factory):
    p = tmp_path_factory.mktemp("edge") / "profile.npz"
    build_profile(data[:4000], feature_names=["a", "b", "c", "colour"], categorical=[3],
                  predictions=data[:4000, 0] > 10).save(p)
    return p


def _guarded(path, **kw):
    provider, exporter = in_memory_tracer_provider()
    guard = Guard(name="edge", profile=str(path), tracer_provider=provider, **kw)

    @guard
    def model(x):
        return {"y": (x[:, 0] * 2).tolist()}

    return guard, model, exporter


def test_contract_for_drift(profile_path, data):
    """The component publishes REFERENCE (names, categorical, rows, predictions) and INPUT_SCHEMA through
    the context, and the guard takes its feature count from the schema without rewriting the config."""
    guard, model, _ = _guarded(profile_path)
    ref = guard.context.get(REFERENCE)
    assert list(ref.feature_names) == ["a", "b", "c", "colour"] and tuple(ref.categorical) == (3,)
    assert ref.reference.shape[1] == 4 and ref.reference_predictions is not None
    assert guard.context.get(INPUT_SCHEMA).n_features == 4
    assert guard.n_features == 4 and guard.config.n_features is None


def test_p_values_in_call_state_and_flag_rate(profile_path, data):
    """Each call stores per-row p-values; held-out rows are flagged near the 1% target."""
    guard, _, _ = _guarded(profile_path)
    comp = guard.component("edge_cases")
    from guarded_serving.call import Call

    X = data[4000:]
    call = Call((X,), {}, X, "x", 0)
    comp.before_call(call)
    p = call.state[EDGE_P_VALUES]
    assert p.shape == (len(X),) and 0.0 < (p <= 0.01).mean() < 0.025


def test_flag_policy_serves_and_exports_span(profile_path, data):
    """Under flag the model answers, the call is flagged and its span carries the explanation."""
    guard, model, exporter = _guarded(profile_path, trace_sample_ratio=0.0)
    rows = data[4000:4003].copy()
    rows[1, 0] *= 1000
    out = model(rows)
    assert len(out["y"]) == 3
    spans = exporter.get_finished_spans()
    assert spans and spans[-1].attributes["guard.edge.flagged_rows"] == 1
    assert "a=" in spans[-1].attributes["guard.edge.explanation"]
    assert guard.stats()["edge_cases"]["rows_flagged"] == 1


def test_reject_policy_raises_422_without_calling_model(profile_path, data):
    """Under reject a flagged call raises RejectedInputError (HTTP 422) with the explanation."""
    guard, _, _ = _guarded(profile_path, edge_policy="reject")
    called = []

    @guard
    def model(x):
        called.append(1)
        return x

    rows = data[4000:4002].copy()
    rows[0, 3] = 9
    with pytest.raises(RejectedInputError, match="colour=9 is a category never seen") as e:
        model(rows)
    assert e.value.error_code == 422 and not called


def test_fallback_policy_merges_in_row_order(profile_path, data):
    """Under fallback flagged rows go to the fallback, others to the model, merged in order."""
    fb = lambda rows: {"y": [-1.0] * len(rows)}  # noqa: E731
    guard, model, _ = _guarded(profile_path, edge_policy="fallback", edge_fallback=fb)
    rows = data[4000:4004].copy()
    rows[2, 2] = -500
    out = model(rows)
    assert out["y"][2] == -1.0 and out["y"][0] == pytest.approx(rows[0, 0] * 2)
    rows[:, 2] = -500
    assert model(rows)["y"] == [-1.0] * 4


def test_nan_allowed_only_where_training_had_missing(profile_path, data):
    """NaN passes where the profile saw missing values and is an input error elsewhere."""
    guard, model, _ = _guarded(profile_path)
    rows = data[4000:4001].copy()
    rows[0, 1] = np.nan
    model(rows)
    rows[0, 0] = np.nan
    with pytest.raises(InvalidInputError, match="feature 0 \\(a\\) is NaN"):
        model(rows)


def test_mismatched_profile_and_fpr_are_clear(profile_path):
    """A profile for another feature count, or an unreachable fpr, is a ConfigError naming both."""
    with pytest.raises(ConfigError, match="n_features=30 does not match profile"):
        Guard(name="edge", profile=str(profile_path), n_features=30)
    with pytest.raises(ConfigError, match="edge_fpr=1e-05"):
        Guard(name="edge", profile=str(profile_path), edge_fpr=1e-5)
    with pytest.raises(ConfigError, match="edge_fallback"):
        Guard(name="edge", profile=str(profile_path), edge_policy="fallback")
    with pytest.raises(ConfigError, match="edge_policy"):
        Guard(name="edge", profile=str(profile_path), edge_policy="drop")


def test_merge_rows_types():
    """merge_rows interleaves arrays, lists and dicts; other types are a clear error."""
    keep, flagged = np.array([0, 2]), np.array([1])
    np.testing.assert_array_equal(merge_rows(np.array([1, 3]), keep, np.array([9]), flagged, 3), [1, 9, 3])
    assert merge_rows([1, 3], keep, [9], flagged, 3) == [1, 9, 3]
    with pytest.raises(TypeError, match="cannot merge"):
        merge_rows("abc", keep, "x", flagged, 3)


def test_reason_header_is_a_valid_http_field_value():
    """A long explanation cut at the header limit never ends in white space (h11 refuses that)."""
    import h11

    from guarded_serving.edge_cases.component import _header_safe

    text = "x" * 999 + " " + "tail é\nmore"
    value = _header_safe(text)
    assert len(value) <= 1000 and value == value.strip()
    h11.Response(status_code=200, headers=[("X-Guard-Edge-Reason", value)])  # raises if invalid
