"""Download raw files: streamed with a progress bar, retried with back-off, resumed via HTTP Range, verified.

A file is streamed into `<name>.part`, resumed from there after a cut connection or an earlier
interrupted run, checked against its pinned SHA-256 and only then renamed to `<name>`: a raw file
under its real name has always been verified. `RETRIES`, `BACKOFF` and `TIMEOUT` are module
constants so that tests (or users, via `download.py --retries`) can change them.
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from urllib.parse import urlsplit

import requests
import urllib3
from tqdm import tqdm

from errors import UserError

RETRIES = 4          # further tries of one URL after its first failure
BACKOFF = 1.0        # seconds before the first retry, doubled for each next one
TIMEOUT = 30.0       # seconds to connect, and between two received blocks
CHUNK = 1 << 20
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}


class DownloadError(Exception):
    """One URL could not be downloaded (after its retries); the message names the URL and the reason."""


class _Retry(Exception):
    """A failure worth another try of the same URL (cut connection, short body, stale partial file)."""


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def check_url(url: str) -> None:
    """Refuse anything but HTTPS (plain HTTP only to this machine's loopback, for tests)."""
    parts = urlsplit(url)
    if parts.scheme != "https" and not (parts.scheme == "http" and parts.hostname in LOOPBACK_HOSTS):
        raise ValueError(f"refusing to download over {parts.scheme or 'no scheme'}: {url} (HTTPS only)")


def ensure_space(folder: Path, needed: int) -> None:
    """UserError if `folder` has less than `needed` bytes free."""
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise UserError(f"not enough disk space in {folder}: {needed / 1e6:.1f} MB needed, "
                        f"{free / 1e6:.1f} MB free; free some space or use --dataset_dir elsewhere")


def fetch(file_name: str, mirrors: Sequence[str], digests: Sequence[str], raw_dir: Path,
          retries: int | None = None) -> tuple[Path, str]:
    """Return (path, sha256) of the verified raw file `raw_dir/file_name`, downloading it if needed."""
    dest = raw_dir / file_name
    if dest.exists():
        digest = sha256_file(dest)
        if digest in digests:
            return dest, digest
        print(f"{dest} does not match its pinned SHA-256; downloading it again", file=sys.stderr)
        dest.unlink()
    try:
        raw_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot write {raw_dir} ({e.strerror or e}); choose a writable --dataset_dir") from None
    part = dest.with_name(dest.name + ".part")
    failures, mismatch = [], None
    for base in mirrors:
        url = base + file_name
        try:
            download(url, part, retries)
        except DownloadError as e:
            failures.append(str(e))
            continue
        digest = sha256_file(part)
        if digest in digests:
            os.replace(part, dest)
            return dest, digest
        part.unlink()
        mismatch = f"checksum mismatch for {file_name} from {url}: SHA-256 {digest}, expected {digests[0]}"
    if mismatch:
        raise UserError(f"{mismatch}; the file was deleted and nothing was converted")
    raise UserError(f"could not download {file_name} ({'; '.join(failures)}); check the network, "
                    "or get the file another way and convert it with --source DIR")


def download(url: str, part: Path, retries: int | None = None) -> None:
    """Stream `url` into `part`, resuming what is there, with `retries` further tries and exponential back-off."""
    check_url(url)
    retries = RETRIES if retries is None else retries
    reason = "no try made"
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(BACKOFF * 2 ** (attempt - 1))
        try:
            _get(url, part)
            return
        except requests.HTTPError as e:
            reason = f"HTTP {e.response.status_code}"
            if e.response.status_code in (401, 403, 404, 410):
                break
        except (requests.RequestException, urllib3.exceptions.HTTPError, _Retry) as e:
            reason = _short_reason(e)
    raise DownloadError(f"{url}: {reason} after {attempt + 1} tr{'y' if attempt == 0 else 'ies'}")


def _short_reason(e: Exception) -> str:
    """A few words for a failed try, instead of urllib3's long nested messages."""
    if isinstance(e, (requests.Timeout, urllib3.exceptions.TimeoutError)):
        return "timed out"
    if isinstance(e, (requests.exceptions.ChunkedEncodingError, urllib3.exceptions.ProtocolError)):
        return "connection cut mid-file"
    if isinstance(e, requests.ConnectionError):
        return "connection failed"
    return str(e).splitlines()[0] if str(e) else type(e).__name__


def _get(url: str, part: Path) -> None:
    """One try: GET from the end of `part` (Range) and append, or restart it if the server sends all."""
    have = part.stat().st_size if part.exists() else 0
    headers = {"Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
    with requests.get(url, stream=True, timeout=TIMEOUT, headers=headers) as r:
        if r.status_code == 416 and have:
            if _range_total(r) == have:
                return  # the partial file is already whole
            part.unlink()
            raise _Retry("stale partial file discarded")
        r.raise_for_status()
        if r.status_code == 206 and _range_start(r) != have:
            part.unlink()
            raise _Retry("server sent another range than asked")
        if r.status_code != 206:
            have = 0  # the server sends the whole file: start over
        length = r.headers.get("Content-Length")
        total = have + int(length) if length is not None else None
        if total is not None:
            ensure_space(part.parent, total - have)
        _write_stream(r, part, have, total)
    size = part.stat().st_size
    if total is not None and size != total:
        raise _Retry(f"got {size} of {total} bytes")


def _write_stream(r: requests.Response, part: Path, have: int, total: int | None) -> None:
    """Append the body to `part` (or rewrite it when `have` is 0) with a progress bar on a terminal."""
    with open(part, "ab" if have else "wb") as f, \
            tqdm(total=total, initial=have, unit="B", unit_scale=True, unit_divisor=1024,
                 desc=part.name.removesuffix(".part"), disable=None, leave=False) as bar:
        for block in _blocks(r):
            f.write(block)
            bar.update(len(block))


def _blocks(r: requests.Response) -> Iterator[bytes]:
    """The raw body in blocks as they arrive (read1), so a cut connection loses nothing already received."""
    read = getattr(r.raw, "read1", r.raw.read)
    while block := read(CHUNK, decode_content=False):
        yield block


def _range_start(r: requests.Response) -> int | None:
    """First byte position of a 206 answer's Content-Range, or None."""
    m = re.match(r"bytes (\d+)-", r.headers.get("Content-Range", ""))
    return int(m.group(1)) if m else None


def _range_total(r: requests.Response) -> int | None:
    """Whole size stated in a Content-Range header ('bytes */N' or 'bytes a-b/N'), or None."""
    m = re.search(r"/(\d+)$", r.headers.get("Content-Range", ""))
    return int(m.group(1)) if m else None
