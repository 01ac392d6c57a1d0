"""Predicted ratings for (user, movie) pairs from a file: `movierec predict-ratings`.

Input: CSV (with a header row) or Parquet with integer columns `user_id` and `movie_id` in the
dataset's original ids; other columns are kept. Output: the same rows in the same order plus
`predicted_rating` (on the dataset's rating scale, clipped) and `basis`, what the prediction
could use (`ServingBundle.predict_ratings`: "user and movie", "movie only" for a user the model
does not know, "user only" for an unknown movie, "mean" when neither is known), written as
Parquet atomically. A bad file is refused with its path, the column and the first bad row.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa

from inference.model import ServingBundle
from movierec.errors import FormatError
from movierec.serving.export import write_parquet

ID_COLUMNS = ("user_id", "movie_id")


def read_pairs(path: Path) -> pd.DataFrame:
    """The pairs of a .csv or .parquet file, ids as int64; FormatError naming what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise FormatError(path, "no such file")
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        elif suffix in (".parquet", ".pq"):
            frame = pd.read_parquet(path)
        else:
            raise FormatError(path, f"expected a .csv or .parquet file, got '{path.suffix}'")
    except (ValueError, OSError, pa.ArrowException, pd.errors.ParserError) as error:
        raise FormatError(path, f"cannot be read: {error}") from None
    for column in ID_COLUMNS:
        if column not in frame.columns:
            raise FormatError(
                path, f"missing column; it has {', '.join(map(str, frame.columns)) or 'none'}", field=column
            )
        frame[column] = _ids(frame[column], path, column, header_line=suffix == ".csv")
    return frame.reset_index(drop=True)


def _ids(values: pd.Series, path: Path, column: str, *, header_line: bool) -> pd.Series:
    """`values` as int64, or FormatError at the first value that is not a whole number (a CSV
    row is named by its line, the header being line 1; a Parquet row by its position from 1)."""
    numbers = pd.to_numeric(values.astype(str).str.strip() if values.dtype == object else values, errors="coerce")
    bad = numbers.isna() | (numbers % 1 != 0)
    if bad.any():
        position = int(bad.to_numpy().argmax())
        line = position + 2 if header_line else None
        where = "" if header_line else f" (row {position + 1})"
        raise FormatError(path, f"{values.iloc[position]!r} is not an integer id{where}", line=line, field=column)
    return numbers.astype("int64")


def predict_pairs(bundle: ServingBundle, pairs: pd.DataFrame) -> pd.DataFrame:
    """`pairs` with `predicted_rating` and `basis` added (see the module docstring)."""
    predicted = bundle.predict_ratings(pairs["user_id"].to_numpy(), pairs["movie_id"].to_numpy())
    return pairs.assign(predicted_rating=predicted["predicted_rating"].to_numpy(), basis=predicted["basis"].to_numpy())


def predict_file(bundle: ServingBundle, pairs_path: Path, out: Path, model_uri: str) -> pd.DataFrame:
    """Read `pairs_path`, predict, write `out` (Parquet, atomically); the frame written."""
    if not bundle.has_rating_predictor:
        raise ValueError(f"{model_uri} has no rating predictor; register a new version with `movierec pipeline`")
    frame = predict_pairs(bundle, read_pairs(pairs_path))
    table = pa.Table.from_pandas(frame, preserve_index=False)
    write_parquet(table, out, metadata={"movierec.model_uri": model_uri})
    return frame
