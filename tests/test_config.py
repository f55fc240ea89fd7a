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
