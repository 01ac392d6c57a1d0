"""Every bad input ends in a specific error and leaves the snapshot store exactly as it was.

Each case starts from a store that already holds a good snapshot, breaks one thing in a copy of
the published files, runs the real `ingest` flow, and compares the store before and after.
"""

from __future__ import annotations

import hashlib
import shutil
import zipfile
from pathlib import Path

import pytest
from published import write_csv_dataset

from movierec.errors import DataError, FormatError, SourceError, ValidationFailed

pytestmark = pytest.mark.usefixtures("prefect_api")

DATASET = "ml-latest-small"


def store_state(home: Path) -> dict[str, str]:
    """Every file under the snapshot store with its content hash."""
    root = home / "snapshots"
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


@pytest.fixture(scope="module")
def good_home(tmp_path_factory, small_raw, prefect_api):
    """A MOVIEREC_HOME holding one good snapshot of the generated files."""
    from flows.ingest import ingest

    root = tmp_path_factory.mktemp("good")
    source = write_csv_dataset(small_raw, root / "data" / DATASET)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MOVIEREC_HOME", str(root / "home"))
        patch.setenv("MOVIEREC_DATA_DIR", str(root / "data"))
        summary = ingest(dataset=DATASET)
    assert not summary["reused"]
    return root / "home", source


@pytest.fixture
def world(tmp_path, monkeypatch, good_home):
    """A private copy of the good home and of the published files, wired into the settings."""
    home, source = good_home
    shutil.copytree(home, tmp_path / "home")
    data = tmp_path / "data"
    shutil.copytree(source, data / DATASET)
    monkeypatch.setenv("MOVIEREC_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MOVIEREC_DATA_DIR", str(data))
    return tmp_path / "home", data / DATASET


def ingest_fails(home: Path, error: type[DataError], *fragments: str) -> DataError:
    from flows.ingest import ingest

    before = store_state(home)
    with pytest.raises(error) as caught:
        ingest(dataset=DATASET)
    message = str(caught.value)
    for fragment in fragments:
        assert fragment in message, message
    assert store_state(home) == before
    return caught.value


def edit_lines(path: Path, edit) -> None:
    lines = path.read_bytes().split(b"\r\n")
    edit(lines)
    path.write_bytes(b"\r\n".join(lines))


def test_empty_file(world):
    home, folder = world
    (folder / "ratings.csv").write_bytes(b"")
    ingest_fails(home, FormatError, "ratings.csv", "the file is empty (0 bytes)")


def test_truncated_last_line(world):
    home, folder = world
    content = (folder / "ratings.csv").read_bytes().rstrip(b"\r\n")
    (folder / "ratings.csv").write_bytes(content[: content.rindex(b",") - 3])
    ingest_fails(home, FormatError, "ratings.csv, line", "expected 4 comma-separated fields", "truncated line?")


def test_missing_column(world):
    home, folder = world
    edit_lines(
        folder / "movies.csv", lambda lines: lines.__setitem__(slice(None), [line.rsplit(b",", 1)[0] for line in lines])
    )
    ingest_fails(home, FormatError, "movies.csv, line 1", "missing column(s) ['genres']")


def test_renamed_column(world):
    home, folder = world
    edit_lines(folder / "ratings.csv", lambda lines: lines.__setitem__(0, b"userId,movieId,score,timestamp"))
    ingest_fails(
        home,
        FormatError,
        "ratings.csv, line 1",
        "missing column(s) ['rating']",
        "unexpected column(s) ['score'] (renamed?)",
    )


def test_wrong_separator(world):
    home, folder = world
    edit_lines(
        folder / "ratings.csv",
        lambda lines: lines.__setitem__(slice(None), [line.replace(b",", b";") for line in lines]),
    )
    ingest_fails(home, FormatError, "ratings.csv, line 1", "semicolon-separated")


def test_non_numeric_rating(world):
    home, folder = world

    def spoil(lines):
        user, movie, _, stamp = lines[5].split(b",")
        lines[5] = b",".join([user, movie, b"four", stamp])

    edit_lines(folder / "ratings.csv", spoil)
    ingest_fails(home, FormatError, "ratings.csv, line 6, field 'rating'", "'four' is not a number")


def _set_field(folder: Path, line: int, position: int, value: bytes) -> None:
    def spoil(lines):
        fields = lines[line].split(b",")
        fields[position] = value
        lines[line] = b",".join(fields)

    edit_lines(folder / "ratings.csv", spoil)


def test_rating_out_of_scale(world):
    home, folder = world
    _set_field(folder, 3, 2, b"7.0")
    failure = ingest_fails(home, ValidationFailed, "expect_column_values_to_be_between", "rating", "7.0")
    assert failure.report is not None and failure.report.exists()


def test_negative_timestamp(world):
    home, folder = world
    _set_field(folder, 3, 3, b"-86400")
    ingest_fails(home, ValidationFailed, "timestamp", "-86400")


def test_far_future_timestamp(world):
    home, folder = world
    _set_field(folder, 3, 3, b"4102444800")  # 2100-01-01
    ingest_fails(home, ValidationFailed, "timestamp", "4102444800")


def test_duplicate_rows_with_identical_timestamps(world):
    home, folder = world
    edit_lines(folder / "ratings.csv", lambda lines: lines.insert(4, lines[3]))
    ingest_fails(home, ValidationFailed, "expect_compound_columns_to_be_unique", "user_id", "movie_id", "timestamp")


def test_ratings_for_unknown_movie_ids(world):
    home, folder = world
    _set_field(folder, 3, 1, b"99999999")
    ingest_fails(home, ValidationFailed, "movie_id", "99999999")


def test_undecodable_bytes(world):
    home, folder = world
    edit_lines(folder / "movies.csv", lambda lines: lines.__setitem__(2, lines[2].replace(b",", b"\xff,", 1)))
    ingest_fails(home, FormatError, "movies.csv, line 3", "undecodable bytes b'\\xff'")


def test_zero_byte_zip(world):
    home, folder = world
    shutil.rmtree(folder)
    (folder.parent / f"{DATASET}.zip").write_bytes(b"")
    ingest_fails(home, SourceError, f"{DATASET}.zip: the archive is empty (0 bytes)")


def test_zip_whose_checksum_does_not_match(world):
    home, folder = world
    archive = folder.parent / f"{DATASET}.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        for path in folder.iterdir():
            bundle.write(path, f"{DATASET}/{path.name}")
    shutil.rmtree(folder)
    (folder.parent / f"{DATASET}.zip.md5").write_text(f"MD5 ({DATASET}.zip) = {'0' * 32}\n")
    ingest_fails(home, SourceError, f"{DATASET}.zip: md5", f"does not match {'0' * 32}")
    assert not (home / "downloads" / "extracted").exists()


def test_dataset_folder_with_a_file_missing(world):
    home, folder = world
    (folder / "links.csv").unlink()
    ingest_fails(
        home,
        SourceError,
        "is missing links.csv",
        "a complete ml-latest-small holds ratings.csv, movies.csv, tags.csv, links.csv",
    )


def test_the_good_copy_is_a_no_op(world):
    """Control: the untouched copy ingests to the snapshot already in the store."""
    from flows.ingest import ingest

    home, _ = world
    before = store_state(home)
    summary = ingest(dataset=DATASET)
    assert summary["reused"]
    assert store_state(home) == before
