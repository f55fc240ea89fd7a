"""GuardConfig: validated when built, errors name the value and what is valid."""

import pytest

from guarded_serving import ConfigError, Guard, GuardConfig


class TestValidation:
    def test_defaults_are_valid(self):
        """A config with only a name is valid and has the documented defaults."""
        cfg = GuardConfig(name="iris")
        assert cfg.latency_slo_ms == 1000.0 and cfg.slo_target == 0.99 and cfg.trace_sample_ratio == 1.0

    @pytest.mark.parametrize("field,value,fragment", [
        ("latency_slo_ms", -1, "latency_slo_ms=-1 is invalid: expected a number > 0"),
        ("latency_slo_ms", float("nan"), "latency_slo_ms=nan"),
        ("slo_target", 1.0, "strictly between 0 and 1"),
        ("trace_sample_ratio", 1.5, "trace_sample_ratio=1.5"),
        ("burn_rate_windows_s", (600, 60), "short <= long"),
        ("latency_window", 3, "an integer >= 16"),
        ("max_batch_rows", 0, "max_batch_rows=0"),
        ("n_features", True, "n_features=True"),
        ("input_arg", "not an identifier", "input_arg="),
        ("readiness_checks", ["latency_slo"], "a tuple of check names"),
    ])
    def test_bad_value_names_field_and_valid_range(self, field, value, fragment):
        """Each invalid value raises ConfigError naming the field, the value and what is valid."""
        with pytest.raises(ConfigError) as info:
            GuardConfig(name="m", **{field: value})
        assert fragment in str(info.value)
        assert str(info.value).startswith(f"{field}=")

    def test_bad_name(self):
        """Model names are restricted to a safe character set."""
        with pytest.raises(ConfigError, match="name='a b'"):
            GuardConfig(name="a b")

    def test_unknown_setting_is_a_type_error(self):
        """A misspelt setting fails loudly instead of being ignored."""
        with pytest.raises(TypeError, match="latency_slo"):
            Guard(name="m", latency_slo=5)

    def test_replace_revalidates(self):
        """replace() returns a validated copy."""
        cfg = GuardConfig(name="m")
        assert cfg.replace(latency_slo_ms=5).latency_slo_ms == 5
        with pytest.raises(ConfigError):
            cfg.replace(latency_slo_ms=0)

    def test_guard_accepts_config_and_overrides(self):
        """Guard(config, **overrides) applies overrides to the given config."""
        g = Guard(GuardConfig(name="m", latency_slo_ms=10), latency_slo_ms=20)
        assert g.config.latency_slo_ms == 20 and g.config.name == "m"


class TestSections:
    def test_flat_keywords_fill_each_capabilitys_section(self):
        """Flat keywords land in the section of the capability that owns them."""
        cfg = GuardConfig(name="m", latency_slo_ms=20, drift=True, drift_window=300, profile=None,
                          hardware_interval_s=None)
        assert cfg.section("slo").latency_slo_ms == 20 and cfg.section("drift").drift_window == 300
        assert cfg.section("operational").hardware_interval_s is None and cfg.section("drift").enabled
        assert set(cfg.sections) == {"slo", "integrity", "operational", "edge_cases", "output_check", "drift",
                                     "performance", "feedback_loops"}
        assert cfg.guard.name == "m" and cfg.latency_slo_ms == 20 and cfg.drift is True

    def test_section_validates_itself(self):
        """Each section validates its own fields: the error names the flat keyword."""
        from guarded_serving.drift.capability import DriftSettings

        with pytest.raises(ConfigError, match="^drift_alpha=2 is invalid"):
            DriftSettings(drift_alpha=2)
        with pytest.raises(ConfigError, match="^drift_window=1 is invalid"):
            GuardConfig(name="m", drift_window=1)

    def test_unknown_setting_suggests_the_near_one(self):
        """A misspelt keyword is a TypeError suggesting the valid keyword."""
        with pytest.raises(TypeError, match="'drift_windw' \\(did you mean 'drift_window'\\?\\)"):
            GuardConfig(name="m", drift_windw=5)

    def test_config_is_immutable_and_replace_keeps_the_rest(self):
        """Attributes cannot be set; replace() rebuilds every section with the change applied."""
        cfg = GuardConfig(name="m", drift=True, edge_fpr=0.05)
        with pytest.raises(AttributeError, match="immutable"):
            cfg.name = "x"  # type: ignore[misc]
        c2 = cfg.replace(latency_slo_ms=5)
        assert c2.latency_slo_ms == 5 and c2.drift and c2.edge_fpr == 0.05 and c2 != cfg
        assert GuardConfig(**cfg.to_dict()) == cfg


class TestRegistry:
    def test_a_third_party_capability_joins_with_its_section(self):
        """A registered capability adds keywords to GuardConfig and its component to every guard."""
        from dataclasses import dataclass

        from guarded_serving import Capability, Component, register_capability
        from guarded_serving import registry
        from guarded_serving.settings import Section, check_number

        @dataclass(frozen=True, kw_only=True)
        class QuotaSettings(Section):
            section = "quota"
            quota_per_call_rows: float = 100.0

            def __post_init__(self):
                check_number("quota_per_call_rows", self.quota_per_call_rows, lo=1)

        class Quota(Component):
            name = "quota"

            def __init__(self, limit):
                self.limit = limit

        cap = Capability("quota", QuotaSettings, lambda s, ctx: Quota(s.quota_per_call_rows))
        register_capability(cap)
        try:
            g = Guard(name="m", quota_per_call_rows=7, operational=False)
            assert g.component("quota").limit == 7
            with pytest.raises(ConfigError, match="quota_per_call_rows=0"):
                Guard(name="m", quota_per_call_rows=0)
            with pytest.raises(ConfigError, match="is taken"):
                register_capability(cap)
        finally:
            registry._CAPABILITIES.remove(cap)

    def test_a_capability_cannot_take_existing_keywords(self):
        """A section reusing a built-in keyword is refused, naming it."""
        from dataclasses import dataclass

        from guarded_serving import Capability, register_capability
        from guarded_serving.settings import Section

        @dataclass(frozen=True, kw_only=True)
        class Clash(Section):
            latency_slo_ms: float = 1.0

        with pytest.raises(ConfigError, match="latency_slo_ms"):
            register_capability(Capability("clash", Clash, lambda s, c: None))
