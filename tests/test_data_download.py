"""Downloads from a local HTTP server on 127.0.0.1: verified, atomic, and clear when they fail."""

from __future__ import annotations

import gzip
import hashlib
import socket
import struct
import threading
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

from gloro.data import ChecksumError, DatasetUnavailableError, download, load_dataset, registry, sources
from gloro.data.download import download_file
from gloro.data.sources import OfficialFile


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


class Handler(BaseHTTPRequestHandler):
    """Serves `files` at /<name>; /cut/<name> announces the full length, sends half and hangs up."""

    files: ClassVar[dict[str, bytes]] = {}

    def do_GET(self):
        cut = self.path.startswith("/cut/")
        name = self.path.removeprefix("/cut/").lstrip("/")
        body = self.files.get(name)
        if body is None:
            self.send_error(404, "Not Found")
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2] if cut else body)
        self.wfile.flush()
        if cut:
            self.close_connection = True

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    """A server on 127.0.0.1 (loopback only, an ephemeral port), stopped after the test."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), type("Files", (Handler,), {"files": {}}))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield httpd
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def base_url(httpd) -> str:
    return f"http://127.0.0.1:{httpd.server_address[1]}"


def leftovers(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir() if path.name.endswith(".part"))


def test_download_verifies_the_checksum_and_renames_into_place(server, tmp_path):
    body = np.random.default_rng(0).bytes(300_000)
    server.RequestHandlerClass.files["blob.bin"] = body
    target = download_file(f"{base_url(server)}/blob.bin", tmp_path / "blob.bin", md5(body), progress=False)
    assert target.read_bytes() == body and leftovers(tmp_path) == []
    assert oct(target.stat().st_mode & 0o777) == "0o644"


def test_checksum_mismatch_raises_and_keeps_the_good_file(server, tmp_path):
    good = b"the good copy"
    (tmp_path / "blob.bin").write_bytes(good)
    server.RequestHandlerClass.files["blob.bin"] = b"something else entirely"
    url = f"{base_url(server)}/blob.bin"
    with pytest.raises(ChecksumError) as caught:
        download_file(url, tmp_path / "blob.bin", md5(good), progress=False)
    message = str(caught.value)
    assert url in message and md5(good) in message and md5(b"something else entirely") in message
    assert (tmp_path / "blob.bin").read_bytes() == good and leftovers(tmp_path) == []


def test_interrupted_download_leaves_no_complete_looking_file(server, tmp_path):
    body = np.random.default_rng(1).bytes(200_000)
    server.RequestHandlerClass.files["blob.bin"] = body
    url = f"{base_url(server)}/cut/blob.bin"
    with pytest.raises(DatasetUnavailableError, match=r"cut/blob\.bin: (connection closed after|received) \d+"):
        download_file(url, tmp_path / "blob.bin", md5(body), progress=False)
    assert list(tmp_path.iterdir()) == []


def test_keyboard_interrupt_mid_download_removes_the_partial_file(server, tmp_path, monkeypatch):
    body = np.random.default_rng(2).bytes(3 * download.CHUNK_BYTES)
    server.RequestHandlerClass.files["blob.bin"] = body

    class Interrupting(download.tqdm):
        def update(self, n=1):
            super().update(n)
            raise KeyboardInterrupt

    monkeypatch.setattr(download, "tqdm", Interrupting)
    with pytest.raises(KeyboardInterrupt):
        download_file(f"{base_url(server)}/blob.bin", tmp_path / "blob.bin", md5(body), progress=False)
    assert list(tmp_path.iterdir()) == []


def test_http_error_names_the_url_and_the_status(server, tmp_path):
    url = f"{base_url(server)}/absent.bin"
    with pytest.raises(DatasetUnavailableError, match=r"absent\.bin: HTTP 404"):
        download_file(url, tmp_path / "absent.bin", "0" * 32, progress=False)
    assert list(tmp_path.iterdir()) == []


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_offline_load_says_which_url_failed_why_and_where_to_put_the_files(tmp_path):
    mirror = f"http://127.0.0.1:{closed_port()}"
    with pytest.raises(DatasetUnavailableError) as caught:
        load_dataset("cifar100", "train", cache_dir=tmp_path, mirror=mirror, progress=False)
    message = str(caught.value)
    assert f"{mirror}/cifar-100-python.tar.gz" in message and "refused" in message.lower()
    assert str(tmp_path / "downloads" / "cifar100") in message and "data_dir" in message
    assert not (tmp_path / "downloads" / "cifar100" / "cifar-100-python.tar.gz").exists()


def idx_gz(array: np.ndarray) -> bytes:
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return gzip.compress(header + array.astype(np.uint8).tobytes())


def test_load_dataset_downloads_verifies_and_caches_from_a_mirror(server, tmp_path, monkeypatch):
    """MNIST's release pointed at small files on the local server: fetched, checked, read, cached."""
    rng = np.random.default_rng(3)
    arrays = {
        "train-images-idx3-ubyte.gz": rng.integers(0, 256, (6, 28, 28)),
        "train-labels-idx1-ubyte.gz": rng.integers(0, 10, 6),
        "t10k-images-idx3-ubyte.gz": rng.integers(0, 256, (2, 28, 28)),
        "t10k-labels-idx1-ubyte.gz": rng.integers(0, 10, 2),
    }
    bodies = {name: idx_gz(array) for name, array in arrays.items()}
    server.RequestHandlerClass.files.update(bodies)
    release = replace(sources.MNIST, files=tuple(OfficialFile(name, md5(body)) for name, body in bodies.items()))
    monkeypatch.setitem(sources.RELEASES, "mnist", release)
    monkeypatch.setitem(registry.DATASETS, "mnist", replace(registry.DATASETS["mnist"], release=release))

    data = load_dataset("mnist", "train", cache_dir=tmp_path, mirror=base_url(server), strict=False, progress=False)
    folder = tmp_path / "downloads" / "mnist"
    assert sorted(path.name for path in folder.iterdir()) == sorted(bodies)
    assert data.labels.tolist() == arrays["train-labels-idx1-ubyte.gz"].tolist()
    assert np.array_equal(data.images[:, 0].numpy(), arrays["train-images-idx3-ubyte.gz"])
    assert [source["checksum"] for source in data.sources] == ["verified", "verified"]
    assert data.location == str(folder.resolve()) and (tmp_path / "mnist-train.pt").is_file()
    server.RequestHandlerClass.files.clear()  # the test split needs no second download
    assert load_dataset("mnist", "test", cache_dir=tmp_path, strict=False, progress=False).labels.tolist() == (
        arrays["t10k-labels-idx1-ubyte.gz"].tolist()
    )


def test_a_corrupted_mirror_file_is_refused_by_load_dataset(server, tmp_path):
    server.RequestHandlerClass.files["cifar-10-python.tar.gz"] = b"not the archive"
    with pytest.raises(
        DatasetUnavailableError, match=r"md5 .*expected the published md5 c58f30108f718f92721af3b95e74349a"
    ):
        load_dataset("cifar10", "test", cache_dir=tmp_path, mirror=base_url(server), progress=False)
    assert list((tmp_path / "downloads" / "cifar10").iterdir()) == []
