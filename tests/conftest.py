"""Shared fixtures: a local HTTP server (Range, cut connections, corrupted bytes) and tiny raw files in each
official format (idx.gz, CIFAR-10 binary tar.gz, SVHN .mat), with their expected arrays."""
from __future__ import annotations

import gzip
import hashlib
import io
import re
import socket
import struct
import sys
import tarfile
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


# ---------------------------------------------------------------- local HTTP server


@dataclass
class ServerState:
    """What the server serves and how it misbehaves; `log` records (path, Range header) of every GET."""

    files: dict[str, bytes] = field(default_factory=dict)
    cut: dict[str, int] = field(default_factory=dict)       # path -> send this many bytes, then close (once)
    corrupt: set[str] = field(default_factory=set)          # paths served with one byte flipped
    status: dict[str, int] = field(default_factory=dict)    # path -> answer this error status
    ranges: bool = True                                     # honour Range requests
    log: list[tuple[str, str | None]] = field(default_factory=list)


class _Handler(BaseHTTPRequestHandler):
    """GET with optional `Range: bytes=N-`, as a static file host would answer it."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        state: ServerState = self.server.state
        rng = self.headers.get("Range")
        state.log.append((self.path, rng))
        if self.path in state.status or self.path not in state.files:
            return self._error(state.status.get(self.path, 404))
        body = state.files[self.path]
        if self.path in state.corrupt:
            body = body[:len(body) // 2] + bytes([body[len(body) // 2] ^ 0xFF]) + body[len(body) // 2 + 1:]
        start = int(m.group(1)) if rng and state.ranges and (m := re.fullmatch(r"bytes=(\d+)-", rng)) else 0
        if start >= len(body) and start:
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{len(body)}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        payload = body[start:]
        cut = state.cut.pop(self.path, None)
        self.wfile.write(payload if cut is None else payload[:cut])
        self.wfile.flush()
        if cut is not None:
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)

    def _error(self, code: int) -> None:
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def http_server():
    """A server on 127.0.0.1 (free port); yields (base URL, ServerState) and stops afterwards."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    server.state = ServerState()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", server.state
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch):
    """Retries without sleeping, and few of them, in every test."""
    from datasets import fetch

    monkeypatch.setattr(fetch, "BACKOFF", 0.0)
    monkeypatch.setattr(fetch, "RETRIES", 2)
    monkeypatch.setattr(fetch, "TIMEOUT", 5.0)


# ---------------------------------------------------------------- tiny raw files in the official formats


@dataclass
class RawSet:
    """Raw files of one source {name: bytes} and the arrays a conversion must give {split: (images, labels)}."""

    files: dict[str, bytes]
    expected: dict[str, tuple[np.ndarray, np.ndarray]]

    def write(self, folder: Path) -> Path:
        """Write the raw files into `folder`; return it."""
        folder.mkdir(parents=True, exist_ok=True)
        for name, data in self.files.items():
            (folder / name).write_bytes(data)
        return folder

    def digests(self) -> dict[str, tuple[str, ...]]:
        """A FILES table pinning these files."""
        return {name: (hashlib.sha256(data).hexdigest(),) for name, data in self.files.items()}


def idx_gz(array: np.ndarray) -> bytes:
    """A gzipped idx file of unsigned bytes, as MNIST ships them."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return gzip.compress(header + array.astype(np.uint8).tobytes(), mtime=0)


def make_idx_set(seed: int, n_train: int = 7, n_test: int = 3) -> RawSet:
    """MNIST-layout files: 28x28 images and labels for train and t10k."""
    rng = np.random.default_rng(seed)
    files, expected = {}, {}
    for split, prefix, n in (("train", "train", n_train), ("test", "t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n).astype(np.uint8)
        files[f"{prefix}-images-idx3-ubyte.gz"] = idx_gz(images)
        files[f"{prefix}-labels-idx1-ubyte.gz"] = idx_gz(labels)
        expected[split] = (images[..., None], labels.astype(np.int64))
    return RawSet(files, expected)


def cifar_records(images_hwc: np.ndarray, labels: np.ndarray) -> bytes:
    """CIFAR-10 binary records: label byte, then the R, G and B planes (CHW)."""
    chw = images_hwc.transpose(0, 3, 1, 2).reshape(len(labels), -1)
    return np.concatenate([labels.astype(np.uint8)[:, None], chw], axis=1).tobytes()


def make_cifar_set(seed: int = 3, per_batch: int = 2) -> RawSet:
    """cifar-10-binary.tar.gz with 5 train batches and a test batch of `per_batch` records each."""
    rng = np.random.default_rng(seed)
    members, parts = {}, {"train": [], "test": []}
    for split, name in [("train", f"data_batch_{i}.bin") for i in range(1, 6)] + [("test", "test_batch.bin")]:
        images = rng.integers(0, 256, (per_batch, 32, 32, 3), dtype=np.uint8)
        labels = rng.integers(0, 10, per_batch).astype(np.uint8)
        members[name] = cifar_records(images, labels)
        parts[split].append((images, labels.astype(np.int64)))
    members["batches.meta.txt"] = b"airplane\nautomobile\n"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(f"cifar-10-batches-bin/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    expected = {s: (np.concatenate([p[0] for p in v]), np.concatenate([p[1] for p in v])) for s, v in parts.items()}
    return RawSet({"cifar-10-binary.tar.gz": buf.getvalue()}, expected)


def make_svhn_set(seed: int = 4, n_train: int = 6, n_test: int = 4) -> RawSet:
    """train_32x32.mat / test_32x32.mat as scipy.io.savemat writes them: X [32,32,3,N], y [N,1] with 10 = digit 0."""
    from scipy.io import savemat

    rng = np.random.default_rng(seed)
    files, expected = {}, {}
    for split, n in (("train", n_train), ("test", n_test)):
        images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
        digits = np.arange(n) % 10
        y = np.where(digits == 0, 10, digits).astype(np.uint8)[:, None]
        buf = io.BytesIO()
        savemat(buf, {"X": images.transpose(1, 2, 3, 0), "y": y})
        files[f"{split}_32x32.mat"] = buf.getvalue()
        expected[split] = (images, digits.astype(np.int64))
    return RawSet(files, expected)


@pytest.fixture
def raw_sets() -> dict[str, RawSet]:
    """Tiny raw files for every public source."""
    return {"mnist": make_idx_set(1), "fashion_mnist": make_idx_set(2), "cifar10": make_cifar_set(),
            "svhn": make_svhn_set()}


@pytest.fixture
def served(http_server, raw_sets, monkeypatch):
    """Every source's tiny files on the local server under /<name>/, its MIRRORS and FILES pointed at them."""
    import datasets

    base, state = http_server
    for name, raw in raw_sets.items():
        module = datasets.SOURCES[name]
        for file_name, data in raw.files.items():
            state.files[f"/{name}/{file_name}"] = data
        monkeypatch.setattr(module, "MIRRORS", [f"{base}/{name}/"])
        monkeypatch.setattr(module, "FILES", raw.digests())
        monkeypatch.setattr(module, "LOCAL_DIRS", [])
    return base, state
