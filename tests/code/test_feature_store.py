import numpy as np
import scipy.sparse as sp

from features.items import FeatureMatrix
from movierec.data.feature_store import features_key, read_matrix, write_features


def test_round_trip_and_no_op_rewrite(tmp_path):
    matrix = sp.csr_matrix(np.array([[0, 0.5, 0.5], [1.0, 0, 0]], dtype=np.float32))
    features = FeatureMatrix(matrix, ["a:1", "a:2", "b:x"], {"a": (0, 2), "b": (2, 3)})
    folder = write_features(tmp_path, {"k": 1}, {"item": features})
    assert folder.name == features_key({"k": 1})
    loaded = read_matrix(folder / "item_features.parquet")
    assert loaded.shape == (2, 3) and (loaded != matrix).nnz == 0
    stamp = (folder / "item_features.parquet").stat().st_mtime_ns
    assert write_features(tmp_path, {"k": 1}, {"item": features}) == folder
    assert (folder / "item_features.parquet").stat().st_mtime_ns == stamp
    assert features_key({"k": 2}) != features_key({"k": 1})


def test_features_written_by_other_code_are_not_reused(tmp_path, monkeypatch):
    from movierec.settings import Settings
    from movierec.training import protocol

    matrix = FeatureMatrix(sp.csr_matrix(np.eye(2, dtype=np.float32)), ["a:1", "a:2"], {"a": (0, 2)})
    settings = Settings(home=tmp_path / "home")
    before = write_features(tmp_path, protocol.feature_settings(settings), {"item": matrix})
    monkeypatch.setattr(protocol, "feature_code_hash", lambda: "changed-code")
    after = write_features(tmp_path, protocol.feature_settings(settings), {"item": matrix})
    assert after != before and '"code": "changed-code"' in (after / "settings.json").read_text()
