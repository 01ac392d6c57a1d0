"""`movierec predict-ratings` on a registered champion: predictions, fallbacks, bad files."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from registered import register_champion
from typer.testing import CliRunner

from movierec.cli import app


def _pairs(bundle) -> pd.DataFrame:
    """A known pair, an unknown user, an unknown movie, neither known; an extra column."""
    user, movie = int(bundle.user_ids[4]), int(bundle.item_ids[7])
    return pd.DataFrame(
        {
            "user_id": [user, 99_999_999, user, 99_999_999],
            "movie_id": [movie, movie, 88_888_888, 88_888_888],
            "note": ["a", "b", "c", "d"],
        }
    )


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_predicted_ratings_for_a_file_of_pairs(home, tmp_path, suffix):
    bundle = register_champion().bundle
    pairs = _pairs(bundle)
    source = tmp_path / f"pairs{suffix}"
    pairs.to_csv(source, index=False) if suffix == ".csv" else pairs.to_parquet(source, index=False)
    out = tmp_path / "out" / "ratings.parquet"
    result = CliRunner().invoke(app, ["predict-ratings", "--pairs", str(source), "--out", str(out)])
    assert result.exit_code == 0, result.output
    frame = pd.read_parquet(out)
    assert frame[["user_id", "movie_id", "note"]].equals(pairs)  # same rows, same order, columns kept
    assert frame["basis"].tolist() == ["user and movie", "movie only", "user only", "mean"]
    user_index, item_index = bundle.user_index(pairs["user_id"]), bundle.item_index(pairs["movie_id"])
    # By hand from the bundle's arrays, the fallbacks dropping the unknown side's terms.
    mean = bundle.rating_mean
    u, i = user_index[0], item_index[0]
    full = mean + bundle.rating_user_bias[u] + bundle.rating_item_bias[i]
    full += float(bundle.rating_user_factors[u] @ bundle.rating_item_factors[i])
    low, high, _ = bundle.rating_scale
    expected = np.clip([full, mean + bundle.rating_item_bias[i], mean + bundle.rating_user_bias[u], mean], low, high)
    np.testing.assert_allclose(frame["predicted_rating"], expected, rtol=1e-5, atol=1e-5)
    assert "predicted 4 ratings" in result.output and "1 movie only" in result.output


def test_a_bad_pairs_file_is_named_and_nothing_is_written(home, tmp_path):
    register_champion()
    out = tmp_path / "ratings.parquet"
    cases = {
        "missing.csv": ("user_id,film\n1,2\n", "field 'movie_id'"),
        "text.csv": ("user_id,movie_id\n1,2\n3,x\n", "line 3, field 'movie_id'"),
        "fraction.csv": ("user_id,movie_id\n1.5,2\n", "line 2, field 'user_id'"),
        "empty_id.csv": ("user_id,movie_id\n1,2\n,4\n", "line 3, field 'user_id'"),
        "pairs.json": ('[{"user_id": 1, "movie_id": 2}]', "expected a .csv or .parquet file"),
    }
    for name, (text, where) in cases.items():
        source = tmp_path / name
        source.write_text(text)
        result = CliRunner().invoke(app, ["predict-ratings", "--pairs", str(source), "--out", str(out)])
        assert result.exit_code == 1, (name, result.output)
        flat = result.output.replace("\n", "")
        assert str(source) in flat and where in flat and "Traceback" not in result.output, (name, result.output)
        assert not out.exists() and not list(tmp_path.glob(".ratings.parquet.*"))
