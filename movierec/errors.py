"""Errors for bad input. Each names the file, line, field or expectation at fault, so that the
message alone tells a user what to fix; the CLI prints it and exits non-zero."""

from __future__ import annotations

from pathlib import Path


class ConfigError(Exception):
    """The settings (file, environment variables) are invalid; the message names each key."""


class DataError(Exception):
    """Base class: input data cannot be turned into a snapshot."""


class SourceError(DataError):
    """A dataset cannot be found, downloaded or verified (missing file, bad checksum, bad zip)."""


class FormatError(DataError):
    """A file does not have the format of its dataset."""

    def __init__(
        self,
        path: Path | str,
        message: str,
        *,
        line: int | None = None,
        field: str | None = None,
    ) -> None:
        self.path = Path(path)
        self.line = line
        self.field = field
        where = str(path)
        if line is not None:
            where += f", line {line}"
        if field is not None:
            where += f", field '{field}'"
        super().__init__(f"{where}: {message}")


class ValidationFailed(DataError):
    """A Great Expectations suite failed; carries every failed expectation and the report path."""

    def __init__(self, suite: str, failures: list[str], report: Path | None) -> None:
        self.suite = suite
        self.failures = failures
        self.report = report
        lines = [f"validation suite '{suite}' failed {len(failures)} expectation(s):"]
        lines += [f"  - {failure}" for failure in failures]
        if report is not None:
            lines.append(f"report: {report}")
        super().__init__("\n".join(lines))
