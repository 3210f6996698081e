"""Downloads of published weights: the one function every URL a recipe names goes through (torchvision's too).

A file is fetched once into the cache (the torch hub's ``checkpoints`` folder, which torchvision
fills too, or ``HUMANSERVE_WEIGHTS_CACHE``), streamed into a ``.partial`` file that becomes the
cached file only when it is whole and its digest matches the pin. ``HUMANSERVE_OFFLINE=1`` (or
``python -m export --offline``) skips every download: only cached files are used.
``HUMANSERVE_WEIGHTS_MIRROR=https://files.example.com/weights`` replaces each URL's origin
(scheme and host) with the mirror's, keeping the path, for clusters that keep their own copy of
the files (as ``HF_ENDPOINT`` does for Hugging Face). ``HUMANSERVE_DOWNLOAD_TIMEOUT`` (seconds,
default 60) bounds each connection attempt and each read.
"""

import hashlib
import http.client
import os
import re
import sys
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import torch
from tqdm import tqdm

OFFLINE = "HUMANSERVE_OFFLINE"
MIRROR = "HUMANSERVE_WEIGHTS_MIRROR"
CACHE = "HUMANSERVE_WEIGHTS_CACHE"
TIMEOUT = "HUMANSERVE_DOWNLOAD_TIMEOUT"
TIMEOUT_S = 60.0  # per connection attempt and per read: a stalled server fails the download, not the export
# torch.hub's convention, which torchvision's and MMPose's file names follow: "name-<sha256 prefix>[._]..."
_HASH_IN_NAME = re.compile(r"-([a-f0-9]{8,})[._]")


class DownloadError(OSError):
    """The file could not be had: offline, unreachable, an HTTP error, a timeout or a truncated body."""


class DigestMismatch(ValueError):
    """The file was fetched whole but is not the pinned one."""


def is_offline() -> bool:
    return os.environ.get(OFFLINE, "").strip().lower() in ("1", "true", "yes", "on")


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE) or Path(torch.hub.get_dir()) / "checkpoints")


def cached_path(url: str) -> Path:
    """Where ``url``'s file lives in the cache: its name, as torch.hub keeps it."""
    return cache_dir() / Path(urlsplit(url).path).name


def mirrored(url: str) -> str:
    """``url`` with its origin replaced by ``HUMANSERVE_WEIGHTS_MIRROR``'s (whose path, if any, goes first)."""
    mirror = os.environ.get(MIRROR, "").strip()
    if not mirror:
        return url
    origin, parts = urlsplit(mirror), urlsplit(url)
    return urlunsplit((origin.scheme, origin.netloc, origin.path.rstrip("/") + parts.path, parts.query, ""))


def pinned_in_name(url: str) -> str | None:
    """The sha256 prefix a file's published name carries (``resnet50-0676ba61.pth``), if any."""
    found = _HASH_IN_NAME.search(Path(urlsplit(url).path).name)
    return found.group(1) if found else None


def download(url: str, sha256: str | None) -> tuple[Path, str]:
    """The file at ``url`` and its sha256, from the cache or fetched into it.

    ``sha256`` pins the file: its full digest or a published prefix of it; ``None`` where nothing
    is published (the digest of what was fetched is returned for the record). Raises
    ``DownloadError`` when the file cannot be had and ``DigestMismatch`` when it is not the pinned
    one. A cached file is trusted, as torch.hub trusts its own: only checked files enter the cache.
    """
    target = cached_path(url)
    if target.is_file():
        return target, sha256_of(target)
    if is_offline():
        raise DownloadError(f"offline ({OFFLINE} is set): {target.name} is not in {target.parent}")
    source = mirrored(url)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:  # a read-only cache (a pod's mounted weights)
        raise DownloadError(f"{source} cannot be cached in {target.parent} ({error})") from error
    partial = target.with_name(f"{target.name}.{os.getpid()}.partial")
    try:
        digest = _fetch(source, partial, float(os.environ.get(TIMEOUT) or TIMEOUT_S))
        if sha256 is not None and not digest.startswith(sha256):
            raise DigestMismatch(f"{source} has sha256 {digest}, not the pinned {sha256}: refusing it")
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)
    return target, digest


def _fetch(url: str, path: Path, timeout: float) -> str:
    """Stream ``url`` into ``path`` (a progress bar on a terminal); its sha256."""
    digest = hashlib.sha256()
    request = urllib.request.Request(url, headers={"User-Agent": "humanserve-export"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response, path.open("wb") as out:
            expected = int(response.headers.get("Content-Length") or 0) or None
            received = 0
            with tqdm(
                total=expected, unit="B", unit_scale=True, desc=path.name.split(".")[0], disable=not sys.stderr.isatty()
            ) as bar:
                while block := response.read(1 << 20):
                    out.write(block)
                    digest.update(block)
                    received += len(block)
                    bar.update(len(block))
    except (OSError, ValueError, http.client.HTTPException) as error:  # HTTP errors, timeouts, cut bodies, bad URLs
        raise DownloadError(f"{url} could not be fetched ({error})") from error
    if expected is not None and received != expected:
        raise DownloadError(f"{url} was truncated: {received} of {expected} bytes")
    return digest.hexdigest()


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
