"""Find a dataset's files: a local folder, a local zip, a cached download, or GroupLens.

Whatever the origin, the result is a folder holding every file the dataset needs, each with its
size and SHA-256 for the lineage record. Nothing half-done is ever left where a later run would
trust it: downloads and extractions go to a temporary name first and are renamed when verified.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from movierec.console import byte_progress, logger
from movierec.data.datasets import DatasetSpec
from movierec.errors import SourceError

CHUNK = 1 << 20


@dataclass
class SourceFiles:
    dataset: str
    folder: Path
    # How the files were obtained: {"kind": "dir" | "zip" | "download", "path"/"url": ..., ...}
    origin: dict
    # Per required file: {"path": str, "bytes": int, "sha256": str}
    files: dict[str, dict] = field(default_factory=dict)

    def path(self, name: str) -> Path:
        return self.folder / name


def file_digest(path: Path, algorithm: str = "sha256") -> str:
    digest = hashlib.new(algorithm)
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def locate(
    spec: DatasetSpec,
    data_dir: Path | None,
    downloads_dir: Path,
    *,
    retries: int = 4,
    backoff_seconds: float = 2.0,
    timeout_seconds: float = 60.0,
) -> SourceFiles:
    """Return the dataset's files, preferring local copies over the cache over a download."""
    if data_dir is not None:
        folder = data_dir / spec.name
        if folder.is_dir():
            return _describe(spec, folder, {"kind": "dir", "path": str(folder)}, data_dir)
        archive = data_dir / f"{spec.name}.zip"
        if archive.exists():
            return _from_zip(spec, archive, downloads_dir, {"kind": "zip", "path": str(archive)})
    cached = downloads_dir / f"{spec.name}.zip"
    if cached.exists():
        return _from_zip(spec, cached, downloads_dir, {"kind": "download", "path": str(cached)})
    if spec.url is None:
        raise SourceError(f"{spec.name}: no local copy in {data_dir} and no download address")
    try:
        _download(spec.url, cached, retries, backoff_seconds, timeout_seconds)
    except SourceError as error:
        looked = f"{data_dir / spec.name}/ or {data_dir / spec.name}.zip" if data_dir else "nowhere"
        raise SourceError(
            f"{spec.name}: no local copy (looked in {looked}) and the download failed: {error}. "
            f"Without internet, set MOVIEREC_DATA_DIR to a folder holding {spec.name}/ "
            f"or {spec.name}.zip."
        ) from error
    return _from_zip(spec, cached, downloads_dir, {"kind": "download", "url": spec.url})


def locate_optional(spec: DatasetSpec, data_dir: Path | None, downloads_dir: Path) -> SourceFiles | None:
    """Like `locate` for local-only datasets (TMDB): None when no copy exists."""
    if data_dir is None:
        return None
    if not (data_dir / spec.name).is_dir() and not (data_dir / f"{spec.name}.zip").exists():
        return None
    return locate(spec, data_dir, downloads_dir)


def _describe(spec: DatasetSpec, folder: Path, origin: dict, sums_dir: Path | None) -> SourceFiles:
    missing = [name for name in spec.files if not (folder / name).is_file()]
    if missing:
        raise SourceError(
            f"dataset folder {folder} is missing {', '.join(missing)} "
            f"(a complete {spec.name} holds {', '.join(spec.files)})"
        )
    expected = _sha256sums(sums_dir / "SHA256SUMS", spec.name) if sums_dir else {}
    files = {}
    for name in spec.files:
        path = folder / name
        digest = file_digest(path)
        if name in expected and expected[name] != digest:
            raise SourceError(
                f"{path}: SHA-256 {digest} does not match {expected[name]} listed in "
                f"{sums_dir / 'SHA256SUMS'}; the copy is damaged or edited"
            )
        files[name] = {"path": str(path), "bytes": path.stat().st_size, "sha256": digest}
    return SourceFiles(spec.name, folder, origin, files)


def _sha256sums(path: Path, dataset: str) -> dict[str, str]:
    """Entries of a `sha256sum` listing that belong to `dataset`, keyed by file name."""
    if not path.is_file():
        return {}
    entries = {}
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        match = re.fullmatch(r"([0-9a-fA-F]{64})\s+\*?(.+)", line.strip())
        if match and match.group(2).startswith(f"{dataset}/"):
            entries[match.group(2).split("/", 1)[1]] = match.group(1).lower()
    return entries


def _expected_archive_digest(archive: Path) -> tuple[str, str] | None:
    """A digest published beside the archive (`X.zip.sha256` or GroupLens-style `X.zip.md5`)."""
    for algorithm, length in (("sha256", 64), ("md5", 32)):
        sidecar = archive.with_name(f"{archive.name}.{algorithm}")
        if sidecar.is_file():
            match = re.search(rf"\b[0-9a-fA-F]{{{length}}}\b", sidecar.read_text(errors="replace"))
            if not match:
                raise SourceError(f"{sidecar}: holds no {algorithm} digest")
            return algorithm, match.group(0).lower()
    return None


def _from_zip(spec: DatasetSpec, archive: Path, downloads_dir: Path, origin: dict) -> SourceFiles:
    size = archive.stat().st_size
    if size == 0:
        raise SourceError(f"{archive}: the archive is empty (0 bytes); delete it and fetch it again")
    archive_sha256 = file_digest(archive)
    expected = _expected_archive_digest(archive)
    if expected is not None:
        algorithm, digest = expected
        actual = archive_sha256 if algorithm == "sha256" else file_digest(archive, "md5")
        if actual != digest:
            raise SourceError(
                f"{archive}: {algorithm} {actual} does not match {digest} in "
                f"{archive.name}.{algorithm}; the archive is damaged or not the published one"
            )
    origin = {**origin, "archive_sha256": archive_sha256, "archive_bytes": size}
    target = downloads_dir / "extracted" / f"{spec.name}-{archive_sha256[:16]}"
    if not target.is_dir():
        _extract(spec, archive, target)
    return _describe(spec, target, origin, None)


def _extract(spec: DatasetSpec, archive: Path, target: Path) -> None:
    """Extract only the files ingestion reads (ml-25m also holds a 400 MB tag genome)."""
    try:
        with zipfile.ZipFile(archive) as bundle:
            members = {Path(info.filename).name: info for info in bundle.infolist() if not info.is_dir()}
            missing = [name for name in spec.files if name not in members]
            if missing:
                raise SourceError(
                    f"{archive}: the archive lacks {', '.join(missing)} "
                    f"(a complete {spec.name} holds {', '.join(spec.files)})"
                )
            target.parent.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
            try:
                for name in spec.files:
                    # Reading through ZipFile checks each member's CRC-32.
                    with bundle.open(members[name]) as source, (staging / name).open("wb") as sink:
                        shutil.copyfileobj(source, sink, CHUNK)
                os.replace(staging, target)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
    except zipfile.BadZipFile as error:
        raise SourceError(f"{archive}: not a readable zip archive ({error})") from error


def _download(url: str, destination: Path, retries: int, backoff: float, timeout: float) -> None:
    destination.parent.mkdir(parents=True, exist_ok=True)
    published_md5 = _fetch_md5(url, timeout)
    last_error: Exception | None = None
    for attempt in range(retries + 1):
        if attempt:
            delay = backoff * 2 ** (attempt - 1)
            logger.warning("download of %s failed (%s); retry %d in %.0f s", url, last_error, attempt, delay)
            time.sleep(delay)
        try:
            _download_once(url, destination, published_md5, timeout)
            return
        except httpx.HTTPStatusError as error:
            if error.response.status_code < 500:
                raise SourceError(f"{url}: HTTP {error.response.status_code}") from error
            last_error = error
        except (httpx.TransportError, SourceError) as error:
            last_error = error
    raise SourceError(f"{url}: gave up after {retries + 1} attempts; last error: {last_error}")


def _fetch_md5(url: str, timeout: float) -> str | None:
    """GroupLens publishes `<archive>.md5` beside each archive; None if it cannot be had."""
    try:
        response = httpx.get(f"{url}.md5", timeout=timeout, follow_redirects=True)
        response.raise_for_status()
    except httpx.HTTPError:
        return None
    match = re.search(r"\b[0-9a-fA-F]{32}\b", response.text)
    return match.group(0).lower() if match else None


def _download_once(url: str, destination: Path, published_md5: str | None, timeout: float) -> None:
    handle, partial_name = tempfile.mkstemp(prefix=f".{destination.name}.", suffix=".part", dir=destination.parent)
    partial = Path(partial_name)
    try:
        md5 = hashlib.md5()
        received = 0
        with (
            os.fdopen(handle, "wb") as sink,
            httpx.stream("GET", url, timeout=timeout, follow_redirects=True) as response,
        ):
            response.raise_for_status()
            declared = int(response.headers.get("content-length", 0)) or None
            with byte_progress(f"downloading {destination.name}", declared) as advance:
                for chunk in response.iter_bytes(CHUNK):
                    sink.write(chunk)
                    md5.update(chunk)
                    received += len(chunk)
                    advance(len(chunk))
        if declared is not None and received != declared:
            raise SourceError(f"{url}: received {received} bytes, the server announced {declared}")
        if published_md5 is not None and md5.hexdigest() != published_md5:
            raise SourceError(f"{url}: md5 {md5.hexdigest()} does not match the published {published_md5}")
        if published_md5 is not None:
            destination.with_name(f"{destination.name}.md5").write_text(f"{published_md5}\n")
        os.replace(partial, destination)
    finally:
        partial.unlink(missing_ok=True)
