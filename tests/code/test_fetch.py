import hashlib
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from movierec.data.datasets import DatasetSpec, get_spec
from movierec.data.fetch import locate
from movierec.errors import SourceError

SPEC = get_spec("ml-100k")
FILES = {
    "u.data": b"1\t2\t3\t881250949\n",
    "u.item": b"2|Toy Story (1995)|||x" + b"|0" * 19 + b"\n",
    "u.user": b"1|24|M|writer|85711\n",
}


def _folder(root: Path) -> Path:
    folder = root / "ml-100k"
    folder.mkdir(parents=True)
    for name, content in FILES.items():
        (folder / name).write_bytes(content)
    return folder


def _zip(path: Path, files=FILES, prefix="ml-100k/") -> Path:
    with zipfile.ZipFile(path, "w") as bundle:
        for name, content in files.items():
            bundle.writestr(prefix + name, content)
    return path


def test_local_folder_is_used_with_checksums(tmp_path):
    _folder(tmp_path)
    source = locate(SPEC, tmp_path, tmp_path / "downloads")
    assert source.origin == {"kind": "dir", "path": str(tmp_path / "ml-100k")}
    assert source.files["u.data"]["sha256"] == hashlib.sha256(FILES["u.data"]).hexdigest()
    assert not (tmp_path / "downloads").exists()


def test_folder_with_a_file_missing_names_it(tmp_path):
    (_folder(tmp_path) / "u.item").unlink()
    with pytest.raises(
        SourceError, match=r"ml-100k is missing u.item \(a complete ml-100k holds u.data, u.item, u.user\)"
    ):
        locate(SPEC, tmp_path, tmp_path / "downloads")


def test_sha256sums_listing_is_enforced(tmp_path):
    _folder(tmp_path)
    (tmp_path / "SHA256SUMS").write_text(f"{'0' * 64}  ml-100k/u.data\n")
    with pytest.raises(SourceError, match=r"u.data: SHA-256 .* does not match 0{64} listed in"):
        locate(SPEC, tmp_path, tmp_path / "downloads")


def test_zip_is_extracted_once_and_verified(tmp_path):
    archive = _zip(tmp_path / "ml-100k.zip")
    (tmp_path / "ml-100k.zip.md5").write_text(f"MD5 (ml-100k.zip) = {hashlib.md5(archive.read_bytes()).hexdigest()}\n")
    source = locate(SPEC, tmp_path, tmp_path / "downloads")
    assert source.origin["kind"] == "zip"
    assert source.path("u.user").read_bytes() == FILES["u.user"]
    again = locate(SPEC, tmp_path, tmp_path / "downloads")
    assert again.folder == source.folder
    assert [p.name for p in (tmp_path / "downloads" / "extracted").iterdir()] == [source.folder.name]


def test_zero_byte_zip(tmp_path):
    (tmp_path / "ml-100k.zip").write_bytes(b"")
    with pytest.raises(SourceError, match=r"ml-100k.zip: the archive is empty \(0 bytes\)"):
        locate(SPEC, tmp_path, tmp_path / "downloads")


def test_zip_checksum_mismatch_leaves_nothing_extracted(tmp_path):
    _zip(tmp_path / "ml-100k.zip")
    (tmp_path / "ml-100k.zip.sha256").write_text("a" * 64 + "  ml-100k.zip\n")
    with pytest.raises(SourceError, match=r"sha256 [0-9a-f]{64} does not match a{64}"):
        locate(SPEC, tmp_path, tmp_path / "downloads")
    assert not (tmp_path / "downloads").exists()


def test_corrupt_zip_member_fails_crc_and_leaves_no_partial_extraction(tmp_path):
    archive = _zip(tmp_path / "ml-100k.zip", {**FILES, "u.data": b"1\t2\t3\t881250949\n" * 50})
    content = bytearray(archive.read_bytes())
    offset = content.index(b"881250949")
    content[offset] = ord("7")
    archive.write_bytes(bytes(content))
    with pytest.raises(SourceError, match=r"not a readable zip archive .*CRC"):
        locate(SPEC, tmp_path, tmp_path / "downloads")
    extracted = tmp_path / "downloads" / "extracted"
    assert not extracted.exists() or list(extracted.iterdir()) == []


def test_zip_without_a_required_file(tmp_path):
    _zip(tmp_path / "ml-100k.zip", {"u.data": FILES["u.data"]})
    with pytest.raises(SourceError, match=r"the archive lacks u\.item, u\.user"):
        locate(SPEC, tmp_path, tmp_path / "downloads")


class _Server:
    """A loopback HTTP server that serves one archive, failing the first `failures` requests."""

    def __init__(self, payload: bytes, failures: int = 0, md5: str | None = None):
        self.payload, self.failures, self.requests = payload, failures, 0
        self.md5 = md5 or hashlib.md5(payload).hexdigest()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                if self.path.endswith(".md5"):
                    body = f"MD5 (ml-100k.zip) = {outer.md5}\n".encode()
                else:
                    outer.requests += 1
                    if outer.requests <= outer.failures:
                        self.send_error(503)
                        return
                    body = outer.payload
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/ml-100k.zip"

    def close(self):
        self.httpd.shutdown()


def _spec(url: str) -> DatasetSpec:
    return DatasetSpec("ml-100k", "ml-100k", SPEC.files, SPEC.rating_scale, url)


def test_download_retries_with_backoff_then_caches(tmp_path):
    server = _Server(_zip(tmp_path / "source.zip").read_bytes(), failures=2)
    try:
        source = locate(_spec(server.url), None, tmp_path / "downloads", retries=3, backoff_seconds=0.01)
    finally:
        server.close()
    assert server.requests == 3
    assert source.origin["kind"] == "download"
    assert (tmp_path / "downloads" / "ml-100k.zip").exists()
    assert sorted(p.name for p in (tmp_path / "downloads").iterdir() if p.is_file()) == [
        "ml-100k.zip",
        "ml-100k.zip.md5",
    ]
    # The cache is used from now on, without any server.
    assert locate(_spec("http://127.0.0.1:9/none.zip"), None, tmp_path / "downloads").folder == source.folder


def test_download_with_wrong_md5_never_reaches_the_cache(tmp_path):
    server = _Server(_zip(tmp_path / "source.zip").read_bytes(), md5="0" * 32)
    try:
        with pytest.raises(SourceError, match=r"does not match the published 0{32}"):
            locate(_spec(server.url), None, tmp_path / "downloads", retries=1, backoff_seconds=0.01)
    finally:
        server.close()
    assert list((tmp_path / "downloads").iterdir()) == []


def test_no_copy_and_no_network_says_how_to_fix(tmp_path):
    with pytest.raises(SourceError, match=r"set MOVIEREC_DATA_DIR to a folder holding ml-100k/ or ml-100k\.zip"):
        locate(_spec("http://127.0.0.1:9/ml-100k.zip"), tmp_path, tmp_path / "downloads", retries=0, timeout_seconds=2)
