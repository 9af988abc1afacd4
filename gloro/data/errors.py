"""Errors raised while finding, downloading and reading data sets; each names the file or URL at fault."""

from __future__ import annotations


class DataError(Exception):
    """Base class of every data error, so a caller can catch them all at once."""


class DatasetUnavailableError(DataError):
    """No source holds the data set: nothing local, and the download is off or failed."""


class CorruptDataError(DataError):
    """A file is truncated, corrupt or not the file expected (wrong format, shape or labels)."""


class ChecksumError(CorruptDataError):
    """A file's checksum differs from the published one."""


class UnverifiedDataWarning(UserWarning):
    """Files were loaded (with strict=False) whose checksums differ from the published ones."""
