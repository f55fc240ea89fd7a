"""PredictionDrift: window tests on model outputs."""

from __future__ import annotations

import numpy as np
import pytest

from guarded_serving.drift.predictions import PredictionDrift, default_output_extractor


class TestExtractor:
    def test_dict_with_probability(self):
        """A dict result gives its 'probability' list as an array."""
        assert default_output_extractor({"label": [1], "probability": [0.7]}).tolist() == [0.7]

    def test_ndarray_and_unknown(self):
        """An ndarray passes through; a string is not an output."""
        assert default_output_extractor(np.array([0.1, 0.2])).shape == (2,)
        assert default_output_extractor("x") is None


class TestDrift:
    def test_binary_scores_stationary_and_shifted(self):
        """Stationary scores stay quiet; scores pushed towards 1 flag score and class frequency."""
        rng = np.random.default_rng(0)
        ref = rng.beta(2, 2, size=3000)
        pd = PredictionDrift().fit(ref)
        assert pd.kind_ == "binary"
        assert pd.test_predictions(rng.beta(2, 2, size=1000)).drifted == ()
        names = {f.feature for f in pd.test_predictions(rng.beta(4, 1.5, size=1000)).drifted}
        assert names == {"prediction.score", "prediction.class"}

    def test_probability_matrix(self):
        """2-D probabilities are tested as top score and argmax class."""
        rng = np.random.default_rng(1)
        ref = rng.dirichlet([1, 1, 1], size=2000)
        pd = PredictionDrift().fit(ref)
        shifted = rng.dirichlet([5, 1, 1], size=1000)
        assert "prediction.class" in {f.feature for f in pd.test_predictions(shifted).drifted}

    def test_wrong_shape_is_an_error(self):
        """Outputs of a different shape than the reference raise ValueError."""
        pd = PredictionDrift().fit(np.random.default_rng(2).uniform(size=100))
        with pytest.raises(ValueError, match="1-D"):
            pd.columns(np.ones((5, 3)))
