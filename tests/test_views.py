"""Input views: any input read into monitored features, stored in the profile, applied by the guard."""

from __future__ import annotations

import numpy as np
import pytest

from guarded_serving import Component, Guard, InvalidInputError
from guarded_serving.edge_cases import build_profile, load_profile
from guarded_serving.keys import FEATURES
from guarded_serving.views import (ArrayView, EmbeddingView, FeatureView, NumberView, RecordsView, TextView,
                                   guess_kind, make_view)

WORDS = ("the model serves answers to requests within its budget and the guard watches every call while "
         "traffic flows through the service on many hosts with data that looks like training data").split()


def sentences(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        words = rng.choice(WORDS, size=int(rng.integers(6, 18)))
        s = " ".join(words)
        out.append(s[0].upper() + s[1:] + ".")
    return out


class TestNumbers:
    def test_vector_and_scalar_are_one_row(self):
        """A 1-D vector and a scalar are read as one row."""
        v = NumberView()
        assert v.transform(np.arange(3.0)).shape == (1, 3)
        assert v.transform([1.0, 2.0]).shape == (1, 2)
        assert v.transform(4.5).tolist() == [[4.5]]

    def test_checks_kept(self):
        """NaN/inf and shape are still refused, naming row and feature."""
        v = NumberView(n_features=2, feature_names=["a", "b"])
        with pytest.raises(InvalidInputError, match="row 0, feature 1 \\(b\\) is NaN"):
            v.transform([[1.0, np.nan]], "inputs")
        with pytest.raises(InvalidInputError, match="expected 2 features per row, got 3"):
            v.transform([[1.0, 2.0, 3.0]], "inputs")


class TestRecords:
    RECS = [{"age": 30, "city": "Oslo", "income": 5.0}, {"age": 41, "city": "Rome", "income": None},
            {"age": 25, "city": "Oslo", "income": 3.5}]

    def test_list_of_dicts_and_dict_of_columns_agree(self):
        """Numeric columns pass as numbers (None -> NaN); categorical ones are coded."""
        v = RecordsView().fit(self.RECS)
        a = v.transform(self.RECS)
        cols = {k: [r[k] for r in self.RECS] for k in self.RECS[0]}
        np.testing.assert_array_equal(a, v.transform(cols))
        assert v.feature_names_ == ["age", "city", "income"] and v.categorical_ == (1,)
        assert np.isnan(a[1, 2]) and a[:, 1].tolist() == [0.0, 1.0, 0.0]

    def test_unseen_category_is_minus_one_and_described(self):
        """A category never seen in training is coded -1 and named in the explanation wording."""
        v = RecordsView().fit(self.RECS)
        assert v.transform({"age": 50, "city": "Lima", "income": 1.0})[0, 1] == -1
        assert "never seen in training" in v.describe(1, -1.0, 0, 1)

    def test_missing_field_and_bad_value_name_the_field(self):
        """A missing field, or text in a numeric field, is a 4xx naming the field."""
        v = RecordsView().fit(self.RECS)
        with pytest.raises(InvalidInputError, match="record field 'income' is missing"):
            v.transform([{"age": 1, "city": "Oslo"}], "records")
        with pytest.raises(InvalidInputError, match="record field 'age': expected a number, got 'x'"):
            v.transform([{"age": "x", "city": "Oslo", "income": 1.0}], "records")

    def test_dataframe(self):
        """A pandas DataFrame reads like the records it holds."""
        pd = pytest.importorskip("pandas")
        v = RecordsView().fit(pd.DataFrame(self.RECS))
        np.testing.assert_array_equal(v.transform(pd.DataFrame(self.RECS)), RecordsView().fit(self.RECS)
                                      .transform(self.RECS))


class TestText:
    def test_descriptors_of_one_text(self):
        """Length, tokens, shares, longest run and out-of-vocabulary share are what they say."""
        v = TextView().fit(["hello world"])
        row = dict(zip(v.feature_names_, v.transform("HELLO there 42!!!")[0]))
        assert row["n_chars"] == 17 and row["n_tokens"] == 3
        assert row["digit_share"] == pytest.approx(2 / 17) and row["upper_share"] == pytest.approx(5 / 10)
        assert row["longest_run"] == 3 and row["oov_share"] == pytest.approx(2 / 3)
        assert row["nonascii_share"] == 0 and row["script"] == 0

    def test_non_latin_script_and_non_ascii(self):
        """Cyrillic text is named as its script and counted as non-ASCII letters."""
        v = TextView().fit(["hello world"])
        row = dict(zip(v.feature_names_, v.transform(["привет мир"])[0]))
        assert row["script"] == 2 and row["nonascii_share"] > 0.8 and row["nonletter_share"] == pytest.approx(0.1)

    def test_bad_text_inputs(self):
        """A number, or a list with a non-string, is a 4xx naming the item."""
        v = TextView().fit(["a b"])
        with pytest.raises(InvalidInputError, match="expected a string or a list of strings, got int"):
            v.transform(5, "texts")
        with pytest.raises(InvalidInputError, match="item 1: expected a string, got NoneType"):
            v.transform(["ok", None], "texts")

    def test_guarded_text_model_flags_edge_cases_with_readable_reasons(self):
        """A text profile: ordinary texts pass; empty, capitals-only and HTML texts are flagged and explained."""
        prof = build_profile(sentences(1500), view="text")
        g = Guard(name="t", profile=prof, operational=False)
        model = g.wrap(lambda texts: [len(t) for t in texts])
        clean = sentences(200, seed=9)
        assert model(clean) == [len(t) for t in clean]  # the model gets its input untouched
        assert g.stats()["edge_cases"]["rows_flagged"] <= 10
        bad = ["", sentences(1, 3)[0].upper(), "<div class='x'><p>" + sentences(1, 4)[0] + "</p></div>" * 3]
        before = g.stats()["edge_cases"]["rows_flagged"]
        model(bad)
        assert g.stats()["edge_cases"]["rows_flagged"] == before + 3
        from guarded_serving.edge_cases.explain import explain_rows

        X = g.view.transform(bad)
        reasons = explain_rows(prof, X, np.arange(3))
        assert any("empty" in r for r in reasons[0]), reasons[0]
        assert any("capital letters" in r for r in reasons[1]), reasons[1]
        assert any("not letters" in r or "characters" in r for r in reasons[2]), reasons[2]

    def test_profile_round_trip_keeps_the_view(self, tmp_path):
        """The view's settings (vocabulary) are saved in the profile; the loaded view reads texts alike."""
        texts = sentences(300)
        prof = build_profile(texts, view="text")
        prof.save(tmp_path / "p.npz")
        loaded = load_profile(tmp_path / "p.npz")
        assert loaded.view.kind == "text" and "text view" in loaded.summary()
        probe = ["Unheard zyxw words", texts[0]]
        np.testing.assert_array_equal(loaded.view.transform(probe), prof.view.transform(probe))


class TestArrays:
    def test_digits_descriptors_and_blank_image(self):
        """8x8 digit images give per-image descriptors; a blank image has no contrast and is flagged."""
        from sklearn.datasets import load_digits

        imgs = load_digits().images
        prof = build_profile(imgs[:1200], view="array")
        g = Guard(name="d", profile=prof, operational=False)
        model = g.wrap(lambda images: np.asarray(images).reshape(len(images), -1).sum(1))
        model(imgs[1200:1500])
        assert g.stats()["edge_cases"]["rows_flagged"] <= 15
        blank, inverted = np.zeros((1, 8, 8)), 16.0 - imgs[1500:1501]
        for odd in (blank, inverted):
            before = g.stats()["edge_cases"]["rows_flagged"]
            model(odd)
            assert g.stats()["edge_cases"]["rows_flagged"] == before + 1

    def test_channels_last_images(self):
        """RGB images (n, H, W, 3) get a mean and std per channel."""
        rng = np.random.default_rng(0)
        x = rng.random((5, 16, 16, 3))
        x[..., 2] *= 0.1
        v = ArrayView().fit(x)
        row = dict(zip(v.feature_names_, v.transform(x[:1])[0]))
        assert row["size0"] == 16 and row["mean_c2"] < row["mean_c0"] / 3

    def test_one_sample_without_batch_axis(self):
        """A single sample of the training shape is one row."""
        v = ArrayView().fit(np.zeros((3, 8, 8)) + np.arange(8))
        assert v.transform(np.ones((8, 8))).shape == (1, len(v.feature_names_))

    def test_torch_tensor_stays_on_its_device(self):
        """A torch tensor is described with torch ops; the result matches numpy's."""
        torch = pytest.importorskip("torch")
        x = np.random.default_rng(1).random((4, 8, 8))
        v = ArrayView().fit(x)
        np.testing.assert_allclose(v.transform(torch.tensor(x)), v.transform(x), rtol=1e-5, atol=1e-6)


class TestEmbeddings:
    def test_projection_and_norm(self):
        """Long vectors become k projected components and the norm; a scaled vector stands out."""
        rng = np.random.default_rng(0)
        E = rng.normal(size=(600, 64))
        v = EmbeddingView(n_components=8).fit(E)
        out = v.transform(E[:2])
        assert out.shape == (2, 9) and out[0, -1] == pytest.approx(np.linalg.norm(E[0]))
        prof = build_profile(E, view=EmbeddingView(n_components=8))
        g = Guard(name="e", profile=prof, operational=False)
        f = g.wrap(lambda x: 0)
        f(E[:1] * 10)
        assert g.stats()["edge_cases"]["rows_flagged"] == 1


class TestAnyInput:
    def test_no_detector_inspects_nothing(self):
        """With no component reading features, any function of any arguments is timed and traced."""
        g = Guard(name="m", operational=False)

        @g
        def chat(prompt: dict, *, temperature: float = 0.5) -> str:
            return prompt["text"][::-1]

        assert chat({"text": "abc"}, temperature=0.1) == "cba"
        assert chat(object.__new__(object) if False else {"text": ""}) == ""
        assert g.stats()["calls"] == 2 and g.stats()["invalid_inputs"] == 0 and g.view is None

    def test_numbers_read_only_when_numeric(self):
        """Without a view, a numeric input is read; a text input to the same guard is left alone."""
        seen = []

        class Reader(Component):
            name = "reader"
            needs = (FEATURES,)

            def before_call(self, call):
                seen.append(None if call.inputs is None else call.inputs.shape)

        g = Guard(name="m", operational=False, components=[Reader()])
        f = g.wrap(lambda x: x)
        f([[1.0, 2.0]])
        f("some text")
        assert seen == [(1, 2), None]

    def test_features_callable_for_anything(self):
        """features= gives your own monitored features for any input."""
        seen = []

        class Reader(Component):
            name = "reader"
            needs = (FEATURES,)

            def before_call(self, call):
                seen.append(call.inputs.tolist())

        g = Guard(name="m", operational=False, features=lambda req: [[len(req["q"]), req["k"]]],
                  components=[Reader()])
        g.wrap(lambda req: req["k"])({"q": "abcd", "k": 3})
        assert seen == [[[4.0, 3.0]]]

    def test_a_view_that_breaks_is_a_component_error(self):
        """A view raising on an odd input does not stop serving; health names it."""
        def features(x):
            raise RuntimeError("cannot read this")

        g = Guard(name="m", operational=False, features=features)
        assert g.wrap(lambda x: "answer")(42) == "answer"
        assert "view.transform: RuntimeError: cannot read this" in g.health()["checks"]["guard.components"]["reason"]

    def test_input_kind_needs_a_profile_for_learned_views(self):
        """input_kind='text' without a text profile is refused with what to do."""
        from guarded_serving import ConfigError

        with pytest.raises(ConfigError, match="guarded-serving profile --kind text"):
            Guard(name="m", input_kind="text")

    @pytest.mark.parametrize("value,kind", [("a", "text"), (["a", "b"], "text"), ([{"a": 1}], "records"),
                                            ({"a": [1]}, "records"), (np.zeros((2, 3, 3)), "array"),
                                            ([[1.0]], "numbers"), (np.zeros(3), "numbers")])
    def test_guess_kind(self, value, kind):
        """The kind of an input follows its type."""
        assert guess_kind(value) == kind

    def test_make_view_names_kinds(self):
        """An unknown kind names the valid ones."""
        from guarded_serving import ConfigError

        with pytest.raises(ConfigError, match="expected one of"):
            make_view("audio")
        assert isinstance(make_view("features", features=len), FeatureView)
