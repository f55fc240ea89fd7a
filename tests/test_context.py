"""Components bind to a read-only GuardContext, declare the keys they provide and need, and are
ordered from those declarations; names are unique."""

from __future__ import annotations

import numpy as np
import pytest

from guarded_serving import Component, ConfigError, Guard, GuardContext, StateKey
from guarded_serving.keys import EDGE_P_VALUES, FEATURES, SLO_VIOLATED

SCORE: StateKey[float] = StateKey("test.score")
LIMIT: StateKey[float] = StateKey("test.limit", "guard")


class Scorer(Component):
    name = "scorer"
    provides = (SCORE, LIMIT)
    needs = (FEATURES,)

    def resources(self):
        return {LIMIT: 2.5}

    def before_call(self, call):
        call.state[SCORE] = float(np.abs(call.inputs).max())


class Judge(Component):
    name = "judge"
    needs = (SCORE, LIMIT, SLO_VIOLATED)

    def bind(self, context: GuardContext) -> None:
        self.limit = context.get(LIMIT)
        self.context = context

    def before_call(self, call):
        if call.get(SCORE, 0.0) > self.limit:
            call.flag(**{"test.judged": True})

    def after_call(self, call):
        self.saw_slo = SLO_VIOLATED in call.state


class TestOrder:
    def test_providers_run_before_needers_whatever_the_given_order(self):
        """A component needing a key is placed after its provider, even when given first."""
        g = Guard(name="m", operational=False, components=[Judge(), Scorer()])
        names = [c.name for c in g.components]
        assert names.index("scorer") < names.index("judge")
        assert names.index("slo") < names.index("judge")

        @g
        def f(x):
            return x

        f(np.array([[1.0, 3.0]]))
        assert g.stats()["flagged"] == 1 and g.component("judge").saw_slo

    def test_user_component_reads_edge_p_values_after_the_edge_component(self, tmp_path):
        """A user component needing EDGE_P_VALUES is placed after the built-in edge-case component."""
        from guarded_serving.edge_cases import build_profile

        rng = np.random.default_rng(0)
        prof = build_profile(rng.normal(size=(600, 3)))

        class Reader(Component):
            name = "reader"
            needs = (EDGE_P_VALUES,)

            def before_call(self, call):
                self.p = call.get(EDGE_P_VALUES)

        r = Reader()
        g = Guard(name="m", operational=False, profile=prof, components=[r])
        names = [c.name for c in g.components]
        assert names.index("edge_cases") < names.index("reader")
        g.wrap(lambda x: x)(rng.normal(size=(4, 3)))
        assert r.p.shape == (4,)

    def test_unordered_components_keep_their_given_order(self):
        """Without declarations, user components run after the built-ins, in the order given."""
        class A(Component):
            name = "a"

        class B(Component):
            name = "b"

        g = Guard(name="m", operational=False, components=[B(), A()])
        assert [c.name for c in g.components][-2:] == ["b", "a"]

    def test_cycle_is_a_config_error(self):
        """Two components needing each other's keys cannot be ordered: ConfigError names them."""
        K1, K2 = StateKey("k1"), StateKey("k2")

        class P(Component):
            name = "p"
            provides, needs = (K1,), (K2,)

        class Q(Component):
            name = "q"
            provides, needs = (K2,), (K1,)

        with pytest.raises(ConfigError, match="cycle.*p needs"):
            Guard(name="m", components=[P(), Q()])

    def test_duplicate_name_is_a_config_error(self):
        """Two components with one name are refused, naming both classes."""
        class Slo(Component):
            name = "slo"

        with pytest.raises(ConfigError, match="two components are named 'slo'"):
            Guard(name="m", components=[Slo()])


class TestContext:
    def test_context_is_read_only(self):
        """Components see config, providers and published values, and cannot write them."""
        j = Judge()
        g = Guard(name="m", operational=False, components=[Scorer(), j])
        ctx = j.context
        assert ctx is g.context and ctx.model_name == "m" and ctx.config is g.config
        with pytest.raises(TypeError):
            ctx.resources[LIMIT] = 9.0  # type: ignore[index]
        with pytest.raises(AttributeError):
            ctx.config.latency_slo_ms = 1  # type: ignore[misc]
        with pytest.raises(KeyError, match="no component of this guard provides"):
            ctx.get(StateKey("nobody", "guard"))
        assert ctx.get(StateKey("nobody", "guard"), None) is None

    def test_resources_must_be_guard_scoped_keys(self):
        """Publishing a call-scoped key as a resource is refused at construction."""
        class Wrong(Component):
            name = "wrong"

            def resources(self):
                return {SCORE: 1.0}

        with pytest.raises(TypeError, match="guard-scoped"):
            Guard(name="m", components=[Wrong()])

    def test_tracer_provider_is_public(self):
        """User components get the guard's tracer provider from the context."""
        from guarded_serving.testing import in_memory_tracer_provider

        provider, exporter = in_memory_tracer_provider()
        j = Judge()
        g = Guard(name="m", tracer_provider=provider, operational=False, components=[Scorer(), j]).start()
        assert j.context.tracer_provider is provider
        with j.context.tracer().start_as_current_span("mine"):
            pass
        assert [s.name for s in exporter.get_finished_spans()] == ["mine"]
        g.stop()

    def test_no_component_rewrites_the_config(self, tmp_path):
        """A profile sets the expected feature count and NaN policy without changing the config."""
        from guarded_serving import InvalidInputError
        from guarded_serving.edge_cases import build_profile

        rng = np.random.default_rng(1)
        X = rng.normal(size=(600, 3))
        X[::10, 1] = np.nan  # feature 1 had missing values in training
        prof = build_profile(X)
        g = Guard(name="m", operational=False, profile=prof)
        assert g.config.n_features is None and g.config.allow_nan is False and g.n_features == 3
        f = g.wrap(lambda x: x)
        f(np.array([[0.0, np.nan, 0.0]]))  # accepted where training had NaN
        with pytest.raises(InvalidInputError, match="row 0, feature 2.*never had missing values"):
            f(np.array([[0.0, 0.0, np.nan]]))
        with pytest.raises(InvalidInputError, match="expected 3 features"):
            f(np.zeros((1, 4)))
