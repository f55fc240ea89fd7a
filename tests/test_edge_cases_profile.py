"""Tests for guarded_serving.edge_cases.profile: the versioned file format."""

import json
import zipfile

import numpy as np
import pytest

from guarded_serving.edge_cases import FORMAT, ProfileError, build_profile, load_profile


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    rng = np.random.default_rng(0)
    X = np.c_[rng.normal(size=(2000, 3)), rng.integers(0, 3, 2000)]
    prof = build_profile(X, feature_names=["a", "b", "c", "colour"], categorical=[3], predictions=X[:, 0])
    path = tmp_path_factory.mktemp("prof") / "p.npz"
    prof.save(path)
    return prof, path, X


def test_round_trip(saved):
    """A saved profile loads with the same header, arrays, scores and a file SHA-256."""
    prof, path, X = saved
    again = load_profile(path)
    assert again.header["format"] == FORMAT and again.feature_names == ["a", "b", "c", "colour"]
    assert again.categorical == (3,) and len(again.sha256) == 64
    np.testing.assert_allclose(again.detector().outlyingness(X[:20]), prof.detector().outlyingness(X[:20]))
    assert again.reference_predictions is not None


def test_edited_array_is_detected(saved, tmp_path):
    """Changing one array makes load fail with a 'corrupt' error naming the file."""
    _, path, _ = saved
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["maximum"] = arrays["maximum"] * 2
    bad = tmp_path / "edited.npz"
    np.savez(bad, **arrays)
    with pytest.raises(ProfileError, match="corrupt"):
        load_profile(bad)


def test_truncated_garbage_and_wrong_format(saved, tmp_path):
    """Truncated, non-npz, missing and wrong-format files each give a clear ProfileError."""
    _, path, _ = saved
    t = tmp_path / "t.npz"
    t.write_bytes(path.read_bytes()[:500])
    with pytest.raises(ProfileError, match="not a readable"):
        load_profile(t)
    with pytest.raises(ProfileError, match="cannot be read"):
        load_profile(tmp_path / "absent.npz")
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    h = json.loads(str(arrays["header"]))
    h["format"] = "guarded-serving-profile/99"
    arrays["header"] = np.array(json.dumps(h))
    w = tmp_path / "w.npz"
    np.savez(w, **arrays)
    with pytest.raises(ProfileError, match="guarded-serving-profile/99"):
        load_profile(w)
    assert zipfile.is_zipfile(path)


def test_format_2_profile_is_refused_with_a_rebuild_message(saved, tmp_path):
    """A format-2 profile (no parts' nulls) is refused, naming both formats and how to rebuild it."""
    _, path, _ = saved
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files if not k.startswith("null_")}
    h = json.loads(str(arrays["header"]))
    h["format"] = "guarded-serving-profile/2"
    arrays["header"] = np.array(json.dumps(h))
    old = tmp_path / "old.npz"
    np.savez(old, **arrays)
    with pytest.raises(ProfileError, match=r"'guarded-serving-profile/2'.*guarded-serving-profile/3.*rebuild it"):
        load_profile(old)
