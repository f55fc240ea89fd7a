"""The extension example (services/rules.py): a user-written component joins a guard with
``components=[...]`` and shows in health, stats and flagged spans, without touching the package."""

from __future__ import annotations

import numpy as np
import pytest

from guarded_serving import ConfigError, Guard
from guarded_serving.edge_cases import build_profile
from guarded_serving.testing import in_memory_tracer_provider
from services.rules import RangeRule


@pytest.fixture(scope="module")
def profile():
    rng = np.random.default_rng(0)
    X = np.abs(rng.normal(10, 2, size=(800, 3)))
    return build_profile(X, feature_names=["radius", "texture", "area"])


def _guarded(profile, **kw):
    provider, exporter = in_memory_tracer_provider()
    g = Guard(name="m", profile=profile, operational=False, trace_sample_ratio=0.0, tracer_provider=provider,
              components=[RangeRule({"radius": (0, None), 2: (0, 100)})], **kw)
    return g, g.wrap(lambda inputs: inputs.sum(axis=1)), exporter


def test_rule_by_name_and_index_flags_and_exports(profile):
    """A row breaking a rule flags the call; the exported span names the rule and the row."""
    g, predict, exporter = _guarded(profile)
    predict(np.array([[10.0, 10.0, 10.0]]))
    assert exporter.get_finished_spans() == ()
    out = predict(np.array([[10.0, 10.0, 10.0], [-1.0, 10.0, 10.0]]))
    assert out.shape == (2,)
    span = exporter.get_finished_spans()[-1]
    assert span.attributes["rules.broken"] == ("radius",) and span.attributes["rules.rows"] == (1,)
    assert "radius=-1 outside [0, inf]" in span.attributes["rules.first"]
    assert span.attributes["guard.anomalous"] is True


def test_single_row_path_agrees_with_the_batch_path(profile):
    """A one-row call (its own float path) flags, counts and explains exactly as a row of a batch;
    a missing value breaks no rule."""
    g, predict, exporter = _guarded(profile, allow_nan=True)
    predict(np.array([[10.0, 10.0, 100.0]]))  # on the upper bound: allowed
    predict(np.array([[np.nan, 10.0, 10.0]]))
    # (the edge-case check may flag these rows and export their spans; the rule must not have)
    assert not any("rules.broken" in s.attributes for s in exporter.get_finished_spans())
    predict(np.array([[10.0, 10.0, 100.5]]))
    span = exporter.get_finished_spans()[-1]
    assert span.attributes["rules.broken"] == ("2",) and span.attributes["rules.rows"] == (0,)
    assert "2=100.5 outside [0, 100]" in span.attributes["rules.first"]
    assert g.stats()["rules"] == {"rows_checked": 3, "violations": {"radius": 0, "2": 1}}


def test_rule_shows_in_health_and_stats(profile):
    """Its check appears in health (degraded past its rate) and its counters in stats."""
    g, predict, _ = _guarded(profile)
    predict(np.array([[10.0, 10.0, 500.0]] * 3))
    rep = g.health()
    assert rep["checks"]["rules.range"]["status"] == "degraded" and rep["ready"]
    assert "area" not in rep["checks"]["rules.range"]["reason"] and "2 3" in rep["checks"]["rules.range"]["reason"]
    assert g.stats()["rules"] == {"rows_checked": 3, "violations": {"radius": 0, "2": 3}}


def test_rule_placed_after_the_profile_that_names_features(profile):
    """Declared needs put the rule after the edge-case component whose schema names the columns."""
    g, _, _ = _guarded(profile)
    names = [c.name for c in g.components]
    assert names.index("edge_cases") < names.index("rules")


def test_unknown_feature_is_a_config_error(profile):
    """A rule on a feature the profile does not know fails when the guard is built."""
    with pytest.raises(ConfigError, match="rules\\['radiuss'\\]"):
        Guard(name="m", profile=profile, components=[RangeRule({"radiuss": (0, 1)})])
