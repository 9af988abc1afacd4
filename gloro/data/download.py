"""Downloads checked against published MD5s and written atomically: a partial file never looks complete."""

from __future__ import annotations

import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from tqdm.auto import tqdm

from gloro.data.errors import ChecksumError, DatasetUnavailableError

CHUNK_BYTES = 1 << 20
USER_AGENT = "gloro-bench (data download; python urllib)"


def md5_bytes(data: bytes) -> str:
    """Hex MD5 of `data` (MD5 because that is what the data sets' publishers list)."""
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def md5_file(path: str | os.PathLike) -> str:
    """Hex MD5 of a file, read in 1 MiB chunks."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as stream:
        while chunk := stream.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def download_file(
    url: str, destination: str | os.PathLike, md5: str, *, progress: bool = True, timeout: float = 60.0
) -> Path:
    """Fetch `url` to `destination`, verify its MD5, and only then rename it into place.

    The bytes go to a hidden `.<name>.*.part` file beside the destination, which is removed on any failure
    (network error, short read, checksum mismatch, KeyboardInterrupt), so an existing good file is never
    overwritten with partial data. Raises DatasetUnavailableError (with the URL and the reason) or
    ChecksumError (with the URL, the expected and the received MD5).
    """
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{destination.name}.", suffix=".part", dir=destination.parent)
    temporary = Path(temporary)
    try:
        with os.fdopen(handle, "wb") as stream:
            received, digest = _fetch(url, stream, progress, timeout, destination.name)
            stream.flush()
            os.fsync(stream.fileno())
        if digest != md5:
            raise ChecksumError(
                f"{url}: downloaded {received} bytes with md5 {digest}, expected the published md5 {md5}; "
                "the file was discarded"
            )
        publish(temporary, destination)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return destination


def publish(temporary: Path, destination: Path) -> None:
    """Give a finished temporary file the usual rw-r--r-- and rename it into place (atomic on POSIX)."""
    os.chmod(temporary, 0o644)
    os.replace(temporary, destination)


def _fetch(url: str, stream, progress: bool, timeout: float, label: str) -> tuple[int, str]:
    """Copy the body of `url` into `stream`; returns (bytes received, hex MD5). Raises on a short body."""
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    digest = hashlib.md5(usedforsecurity=False)
    received = 0
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
            expected = int(length) if length is not None and length.isdigit() else None
            with tqdm(
                total=expected, unit="B", unit_scale=True, unit_divisor=1024, desc=label, disable=not progress
            ) as bar:
                while chunk := response.read(CHUNK_BYTES):
                    stream.write(chunk)
                    digest.update(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
    except urllib.error.HTTPError as error:
        raise DatasetUnavailableError(f"{url}: HTTP {error.code} {error.reason}") from error
    except urllib.error.URLError as error:
        raise DatasetUnavailableError(f"{url}: {error.reason}") from error
    except http.client.IncompleteRead as error:
        received += len(error.partial)
        raise DatasetUnavailableError(
            f"{url}: connection closed after {received} of {received + (error.expected or 0)} bytes"
        ) from error
    except (OSError, http.client.HTTPException) as error:
        raise DatasetUnavailableError(f"{url}: {type(error).__name__}: {error}") from error
    if expected is not None and received != expected:
        raise DatasetUnavailableError(f"{url}: received {received} bytes, the server announced {expected}")
    return received, digest.hexdigest()
