"""Hardening (issue 18), in process: client errors are not model errors, implausible values are
refused, integrity binds the bytes that are loaded, state is private, orphaned workers exit."""

from __future__ import annotations

import os
import pickle
import stat
from pathlib import Path

import numpy as np
import pytest
from bentoml.exceptions import NotFound

from guarded_serving import Guard, InvalidInputError
from guarded_serving.integrity import (
    IntegrityError,
    create_manifest,
    generate_keypair,
    sign_manifest,
)
from guarded_serving.operational.parent import ParentWatch
from guarded_serving.store.sqlite import SQLiteWindowStore
from guarded_serving.validation import as_feature_matrix

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "services" / "artifacts"
PROFILE = str(ARTIFACTS / "profile.npz")


def _X() -> np.ndarray:
    return np.load(ARTIFACTS / "reference.npz")["X_train"]


class TestClientErrorsAreNotModelErrors:
    def test_a_4xx_raised_by_the_endpoint_is_not_a_model_error(self):
        """An endpoint answering 404 (a disabled feature) counts as the caller's error, never the model's."""
        g = Guard(name="m", min_window_calls=5)

        @g
        def disabled(inputs):
            raise NotFound("disabled")

        for _ in range(50):
            with pytest.raises(NotFound):
                disabled([[1.0, 2.0]])
        s = g.stats()
        assert s["errors"] == 0 and s["invalid_inputs"] == 50
        assert g.health()["checks"]["model_errors"]["status"] == "ok" and g.is_ready()

    def test_failing_error_rate_alerts_but_does_not_gate_readiness_unless_opted_in(self):
        """Model errors turn model_errors failing (health degraded) but the service stays ready by default."""
        for opt_in, ready in ((False, True), (True, False)):
            g = Guard(name="m", min_window_calls=5, error_rate_gates_readiness=opt_in)

            @g
            def broken(inputs):
                raise RuntimeError("bug")

            for _ in range(10):
                with pytest.raises(RuntimeError):
                    broken([[1.0]])
            h = g.health()
            assert h["checks"]["model_errors"]["status"] == "failing"
            assert h["ready"] is ready and h["status"] == ("degraded" if ready else "failing")

    def test_implausible_value_is_refused_naming_the_feature_before_the_model(self):
        """1e308 in a low-variance feature is a 400 naming row and feature; the model never runs."""
        g = Guard(name="m", profile=PROFILE, drift=False)
        seen = []

        @g
        def predict(inputs):
            seen.append(1)
            return [0] * len(inputs)

        X = _X()[:3].copy()
        assert predict(X) == [0, 0, 0]
        j = int(np.argmin(X.std(axis=0)))
        X[1, j] = 1e308
        with pytest.raises(InvalidInputError) as info:
            predict(X)
        name = g.context.get(__import__("guarded_serving").keys.INPUT_SCHEMA).feature_names[j]
        assert f"row 1, feature {j} ({name})" in str(info.value) and "training ranges" in str(info.value)
        assert info.value.error_code == 400 and len(seen) == 1
        assert g.stats()["errors"] == 0 and g.stats()["invalid_inputs"] == 1
        # a value merely outside the training range (a real edge case) still reaches the model
        X[1, j] = _X()[:, j].max() * 3
        predict(X)
        assert len(seen) == 2

    @pytest.mark.parametrize("n_features", [None, 30])
    def test_rows_within_the_limits_reach_the_model_as_sent_and_others_get_the_full_checks(self, n_features):
        """A float64 matrix inside the plausibility limits (their edges included) is passed on as is (one
        comparison stands for the finiteness and plausibility checks); NaN, inf, values beyond the limits
        and other dtypes still get the full checks and their messages."""
        g = Guard(name="m", profile=PROFILE, drift=False, n_features=n_features)
        seen = []

        @g
        def predict(inputs):
            seen.append(inputs)
            return len(inputs)

        X = _X()[:2].copy()
        assert predict(X) == 2 and seen[-1] is X
        lo, hi, _ = g._limits
        edges = np.vstack([lo, hi])
        assert predict(edges) == 2 and seen[-1] is edges
        for value, message in ((np.nan, "is NaN"), (np.inf, "is inf"), (hi[3] * 2 + 1, "training ranges")):
            bad = X.copy()
            bad[1, 3] = value
            with pytest.raises(InvalidInputError) as info:
                predict(bad)
            assert "row 1, feature 3" in str(info.value) and message in str(info.value)
        ints = np.clip(np.rint(X), np.ceil(lo), np.floor(hi)).astype(np.int64)
        assert predict(ints) == 2 and seen[-1] is ints  # checked through the view, passed on as sent
        assert g.stats()["invalid_inputs"] == 3 and len(seen) == 3

    def test_implausible_ranges_none_disables_the_check(self):
        g = Guard(name="m", profile=PROFILE, drift=False, implausible_ranges=None)
        f = g(lambda inputs: "ran")
        X = _X()[:1].copy()
        X[0, 0] = 1e300
        assert f(X) == "ran"


class TestClearMessages:
    @pytest.mark.parametrize("value, expected", [
        ([[1.0, "abc", 2.0]], "row 0, column 1 (b) is a string ('abc')"),
        ([[1.0, 2.0, 3.0], [None, 1.0, 2.0]], "row 1, column 0 (a) is null"),
        (np.array([[True, False, True]]), "row 0, column 0 (a) is a boolean"),
        ([[1.0, 2.0, 3.0], [1.0, [2.0], 3.0]], "ragged"),
    ])
    def test_non_numbers_name_row_and_column(self, value, expected):
        """Strings, nulls and booleans are refused naming the row, the column and the feature."""
        with pytest.raises(InvalidInputError) as info:
            as_feature_matrix(value, "inputs", n_features=3, max_rows=10, allow_nan=False, feature_names=("a", "b", "c"))
        assert expected in str(info.value)

    def test_booleans_are_accepted_where_the_profile_says_flag(self):
        x = as_feature_matrix(np.array([[True, False]]), "inputs", n_features=2, max_rows=10, allow_nan=False,
                              boolean=np.array([True, True]))
        assert x.tolist() == [[1.0, 0.0]]


def _deployment(d: Path, payload: bytes = b"model bytes") -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "model.pkl").write_bytes(payload)
    m = create_manifest(name="m", version="1", artifacts=[("model", d / "model.pkl")], root=d)
    m.save(d / "manifest.json")
    return d


class _Payload:
    """A pickle that creates a file when unpickled (what an attacker would put in model.pkl)."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


class TestIntegrityBindsWhatIsServed:
    def test_unsigned_manifest_is_degraded_naming_what_is_not_protected(self, tmp_path):
        d = _deployment(tmp_path / "d")
        g = Guard(name="m", manifest=str(d / "manifest.json"), integrity_check_interval_s=0)
        sig = g.health()["checks"]["integrity.signature"]
        assert sig["status"] == "degraded" and "not signed" in sig["reason"] and "tampered" in sig["reason"]
        assert g.health()["status"] == "degraded" and g.is_ready()

    def test_signature_without_public_key_is_degraded_and_edited_digest_still_caught_by_hash(self, tmp_path):
        d = _deployment(tmp_path / "d")
        priv, _pub = generate_keypair(tmp_path / "k")
        from guarded_serving.integrity import Manifest

        sign_manifest(Manifest.load(d / "manifest.json"), priv).save(d / "manifest.json")
        g = Guard(name="m", manifest=str(d / "manifest.json"), integrity_check_interval_s=0)
        sig = g.health()["checks"]["integrity.signature"]
        assert sig["status"] == "degraded" and "no public key" in sig["reason"]

    def test_require_signature_refuses_an_unsigned_manifest(self, tmp_path):
        d = _deployment(tmp_path / "d")
        with pytest.raises(IntegrityError, match="require_signature"):
            Guard(name="m", manifest=str(d / "manifest.json"), require_signature=True, integrity_check_interval_s=0)

    def test_missing_manifest_is_an_explicit_unavailable_check(self):
        h = Guard(name="m").health()["checks"]["integrity.manifest"]
        assert h["status"] == "unavailable" and "not verified" in h["reason"]

    def test_manifest_from_another_directory_verifies_the_served_directory(self, tmp_path):
        """With artifact_root set to the served directory, a manifest kept elsewhere checks the served files."""
        pristine = _deployment(tmp_path / "pristine")
        served = _deployment(tmp_path / "served", b"tampered model")
        with pytest.raises(IntegrityError, match="model.pkl"):
            Guard(name="m", manifest=str(pristine / "manifest.json"), artifact_root=str(served),
                  integrity_check_interval_s=0)

    def test_loading_a_file_outside_the_manifest_is_refused(self, tmp_path):
        pristine = _deployment(tmp_path / "pristine")
        served = _deployment(tmp_path / "served")
        g = Guard(name="m", manifest=str(pristine / "manifest.json"), integrity_check_interval_s=0)
        with pytest.raises(IntegrityError, match="not an artifact of manifest"):
            g.open_artifact(served / "model.pkl")
        assert g.open_artifact(pristine / "model.pkl") == b"model bytes"

    def test_tampered_pickle_is_never_unpickled_under_not_ready(self, tmp_path):
        """Under integrity_policy='not_ready' the tampered model makes the service not ready and
        open_artifact refuses it: the payload (which would create a file) never runs."""
        d = _deployment(tmp_path / "d", pickle.dumps({"weights": [1, 2, 3]}))
        marker = tmp_path / "payload-ran"
        (d / "model.pkl").write_bytes(pickle.dumps(_Payload(str(marker))))
        g = Guard(name="m", manifest=str(d / "manifest.json"), integrity_policy="not_ready",
                  integrity_check_interval_s=0)
        assert not g.is_ready()
        with pytest.raises(IntegrityError, match="refusing to load"):
            pickle.loads(g.open_artifact(d / "model.pkl"))
        assert not marker.exists()

    def test_file_swapped_after_startup_is_refused_at_load(self, tmp_path):
        d = _deployment(tmp_path / "d")
        g = Guard(name="m", manifest=str(d / "manifest.json"), integrity_check_interval_s=0)
        (d / "model.pkl").write_bytes(b"swapped after the startup check")
        with pytest.raises(IntegrityError, match="modified"):
            g.open_artifact(d / "model.pkl")


class TestPrivateState:
    def test_sqlite_store_and_its_directory_are_private(self, tmp_path):
        old = os.umask(0o022)
        try:
            store = SQLiteWindowStore(tmp_path / "state" / "sub" / "drift.sqlite")
            store.append_batches([("b1", {"s": np.ones((2, 3))})])
        finally:
            os.umask(old)
        for p in (tmp_path / "state", tmp_path / "state" / "sub"):
            assert stat.S_IMODE(p.stat().st_mode) == 0o700
        for p in (tmp_path / "state" / "sub").iterdir():
            assert stat.S_IMODE(p.stat().st_mode) == 0o600, p

    def test_profile_written_by_the_guard_is_private(self, tmp_path):
        from guarded_serving.edge_cases.profile import load_profile

        prof = load_profile(PROFILE)
        prof.save(tmp_path / "p.npz")
        assert stat.S_IMODE((tmp_path / "p.npz").stat().st_mode) == 0o600

    def test_store_digits_rounds_what_is_stored(self):
        from guarded_serving.drift.component import quantise

        assert quantise(np.array([[123.456, 0.0012345, -98765.0, np.nan]]), 2)[0, :3].tolist() == [120.0, 0.0012,
                                                                                                   -99000.0]


class TestParentWatch:
    def test_a_changed_parent_triggers_the_shutdown_once(self):
        seen = []
        w = ParentWatch(on_orphan=lambda old, new: seen.append((old, new)))
        w.parent_pid = os.getppid()
        assert w.check() is True and seen == []
        w.parent_pid = 999_999_999  # as if the parent had been replaced by init
        assert w.check() is False and w.check() is False
        assert seen == [(999_999_999, os.getppid())]

    def test_off_by_default_and_on_with_exit_with_parent(self):
        assert Guard(name="m").component("operational").parent_watch is None
        g = Guard(name="m", exit_with_parent=True, hardware_interval_s=None)
        g.start()
        try:
            assert g.component("operational").parent_watch.running
        finally:
            g.stop()


class TestOpenSSFModelSigning:
    def test_signed_directory_verifies_and_a_tampered_file_fails(self, tmp_path):
        """A model directory signed with the model-signing package's own API is verified at startup;
        one tampered file turns integrity.model_signature failing in the background re-check."""
        pytest.importorskip("model_signing")
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from model_signing import signing

        key = ec.generate_private_key(ec.SECP256R1())
        (tmp_path / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                             serialization.PrivateFormat.PKCS8,
                                                             serialization.NoEncryption()))
        (tmp_path / "key.pub").write_bytes(key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
        model = tmp_path / "model"
        model.mkdir()
        (model / "model.pkl").write_bytes(pickle.dumps({"w": [1, 2]}))
        (model / "config.json").write_text('{"layers": 2}')
        signing.Config().use_elliptic_key_signer(private_key=tmp_path / "key.pem").sign(model, tmp_path / "model.sig")

        g = Guard(name="m", model_signature=str(tmp_path / "model.sig"), model_signature_key=str(tmp_path / "key.pub"),
                  artifact_root=str(model), integrity_check_interval_s=0)
        check = g.health()["checks"]["integrity.model_signature"]
        assert check["status"] == "ok" and g.is_ready()
        assert pickle.loads(g.open_artifact(model / "model.pkl")) == {"w": [1, 2]}

        (model / "config.json").write_text('{"layers": 3}')
        g.component("integrity").recheck()
        check = g.health()["checks"]["integrity.model_signature"]
        assert check["status"] == "failing" and "config.json" in check["reason"]
        assert not g.is_ready()
        with pytest.raises(IntegrityError):
            g.open_artifact(model / "model.pkl")

        # refused at startup too (integrity_policy="refuse")
        with pytest.raises(IntegrityError, match="does not verify"):
            Guard(name="m", model_signature=str(tmp_path / "model.sig"), model_signature_key=str(tmp_path / "key.pub"),
                  artifact_root=str(model), integrity_check_interval_s=0)
