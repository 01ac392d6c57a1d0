from pathlib import Path

import pytest
from published import write_csv_dataset, write_ml100k

from movierec.data.datasets import get_spec
from movierec.data.fetch import locate
from movierec.data.parse import FLOAT, INT, STR, Column, read_dataset, read_delimited
from movierec.errors import FormatError

RATINGS = [Column("userId", INT), Column("movieId", INT), Column("rating", FLOAT), Column("timestamp", INT)]


def _read(path: Path, text: bytes, **options):
    path.write_bytes(text)
    return read_delimited(path, RATINGS, separator=",", header=True, quoted=True, **options)


def test_reads_crlf_csv_with_quoted_fields(tmp_path):
    frame = _read(
        tmp_path / "ratings.csv", b"userId,movieId,rating,timestamp\r\n1,2,4.5,964982703\r\n3,4,1.0,964982704\r\n"
    )
    assert frame["rating"].tolist() == [4.5, 1.0]
    assert frame["timestamp"].tolist() == [964982703, 964982704]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "the file is empty (0 bytes)"),
        (b"userId,movieId,rating,timestamp\r\n", "no data rows"),
        (b"userId,movieId,timestamp\r\n1,2,3\r\n", "line 1: missing column(s) ['rating']"),
        (b"userId,movieId,score,timestamp\r\n1,2,3,4\r\n", "unexpected column(s) ['score'] (renamed?)"),
        (b"userId;movieId;rating;timestamp\r\n1;2;3;4\r\n", "semicolon-separated"),
        (
            b"userId,movieId,rating,timestamp\r\n1,2,4.0,964982703\r\n1,3\r\n",
            "line 3: expected 4 comma-separated fields",
        ),
        (
            b"userId,movieId,rating,timestamp\r\n1,2,4.0,964982703\r\n1,3,abc,964982703\r\n",
            "line 3, field 'rating': 'abc' is not a number",
        ),
        (
            b"userId,movieId,rating,timestamp\r\n1,2,4.0,964982703\r\n1,x,4,964982703\r\n",
            "line 3, field 'movieId': 'x' is not an integer",
        ),
        (
            b"userId,movieId,rating,timestamp\r\n1,2,4.0,964982703\r\n1,3,,964982703\r\n",
            "line 3, field 'rating': empty value",
        ),
    ],
)
def test_format_errors_name_file_line_and_field(tmp_path, content, message):
    with pytest.raises(FormatError) as caught:
        _read(tmp_path / "ratings.csv", content)
    assert str(tmp_path / "ratings.csv") in str(caught.value)
    assert message in str(caught.value)


def test_truncated_last_line_is_named(tmp_path):
    path = tmp_path / "u.data"
    path.write_bytes(b"196\t242\t3\t881250949\n186\t302\t3\t891717742\n22\t37")
    with pytest.raises(
        FormatError, match=r"line 3: expected 4 tab-separated fields .* found 2: '22\\t37' \(truncated line\?\)"
    ):
        read_delimited(path, RATINGS, separator="\t", header=False)


def test_undecodable_bytes_are_located(tmp_path):
    path = tmp_path / "movies.csv"
    path.write_bytes(b"movieId,title,genres\r\n1,Toy Story (1995),Comedy\r\n2,Caf\xe9 (1999),Drama\r\n")
    columns = [Column("movieId", INT), Column("title", STR), Column("genres", STR)]
    with pytest.raises(FormatError, match=r"line 3: undecodable bytes b'\\xe9'"):
        read_delimited(path, columns, separator=",", header=True, quoted=True)


def test_parses_csv_dataset_as_published(tmp_path, small_raw):
    folder = write_csv_dataset(small_raw, tmp_path / "ml-latest-small")
    spec = get_spec("ml-latest-small")
    raw = read_dataset(spec, locate(spec, tmp_path, tmp_path / "downloads"))
    assert len(raw.ratings) == len(small_raw.ratings)
    assert raw.ratings["rating"].tolist() == small_raw.ratings["rating"].tolist()
    assert raw.movies["title"].tolist() == small_raw.movies["title"].tolist()
    assert raw.movies["tmdb_id"].notna().all()
    assert len(raw.tags) == len(small_raw.tags)
    assert (folder / "ratings.csv").read_bytes().count(b"\r\n") == len(small_raw.ratings) + 1


def test_parses_ml100k_as_published(tmp_path, small_raw):
    write_ml100k(small_raw, tmp_path / "ml-100k")
    spec = get_spec("ml-100k")
    raw = read_dataset(spec, locate(spec, tmp_path, tmp_path / "downloads"))
    assert len(raw.ratings) == len(small_raw.ratings)
    assert set(raw.ratings["rating"].unique()) <= {1.0, 2.0, 3.0, 4.0, 5.0}
    assert raw.users["occupation"].tolist() == small_raw.users["occupation"].tolist()
    assert raw.movies["genres"].str.len().gt(0).all()
    assert raw.tags is None


def test_ml1m_double_colon_format(tmp_path):
    folder = tmp_path / "ml-1m"
    folder.mkdir()
    (folder / "ratings.dat").write_bytes(b"1::1193::5::978300760\n1::661::3::978302109\n")
    (folder / "movies.dat").write_bytes(
        b"1193::One Flew Over the Cuckoo's Nest (1975)::Drama\n661::James and the Giant Peach (1996)::Animation|Children's|Musical\n"
    )
    (folder / "users.dat").write_bytes(b"1::F::1::10::48067\n")
    spec = get_spec("ml-1m")
    raw = read_dataset(spec, locate(spec, tmp_path, tmp_path / "downloads"))
    assert raw.ratings.values.tolist() == [[1, 1193, 5.0, 978300760], [1, 661, 3.0, 978302109]]
    assert raw.users.iloc[0].tolist() == [1, 1, "F", "K-12 student", "48067"]
    assert raw.movies["genres"].tolist() == ["Drama", "Animation|Children's|Musical"]


def _ml1m(folder: Path, ratings: bytes, users: bytes = b"1::F::1::10::48067\n") -> None:
    folder.mkdir()
    (folder / "ratings.dat").write_bytes(ratings)
    (folder / "movies.dat").write_bytes(b"1193::One Flew Over the Cuckoo's Nest (1975)::Drama\n")
    (folder / "users.dat").write_bytes(users)


@pytest.mark.parametrize(
    "ratings, message",
    [
        (b"1::1193::5::978300760\n0::1193::3::978302109\n", "ratings.dat, line 2, field 'user_id': user_id 0 is not"),
        (b"1::-1193::5::978300760\n", "ratings.dat, line 1, field 'movie_id': movie_id -1193 is not a positive"),
        (
            b"1::1193::5::978300760\n1::1193::4::978300761\n7::1193::3::978302109\n",
            "ratings.dat, line 3, field 'user_id': user_id 7 is not in users.dat (1 rating(s) by users missing",
        ),
    ],
)
def test_ratings_with_non_positive_ids_or_unknown_users_are_refused(tmp_path, ratings, message):
    _ml1m(tmp_path / "ml-1m", ratings)
    spec = get_spec("ml-1m")
    with pytest.raises(FormatError) as error:
        read_dataset(spec, locate(spec, tmp_path, tmp_path / "downloads"))
    assert message in str(error.value)


def test_a_csv_ratings_file_counts_its_header_line(tmp_path):
    path = tmp_path / "ratings.csv"
    path.write_bytes(b"userId,movieId,rating,timestamp\n1,2,4.0,100\n3,0,4.0,100\n")
    from movierec.data.parse import _read_ratings

    with pytest.raises(FormatError, match=r"ratings.csv, line 3, field 'movieId': movieId 0 is not a positive integer"):
        _read_ratings(path, "userId", "movieId", separator=",", header=True)


@pytest.mark.realdata
def test_real_files_parse_to_published_counts(real_data, tmp_path):
    for name, counts in {"ml-100k": (100_000, 1_682), "ml-latest-small": (100_836, 9_742)}.items():
        spec = get_spec(name)
        raw = read_dataset(spec, locate(spec, real_data, tmp_path))
        assert (len(raw.ratings), len(raw.movies)) == counts
