"""Downloading published checkpoints into a cache, once, with a recorded checksum.

* The cache folder is ``$CENTERMASK_CACHE`` (default ``~/.cache/centermask``); a file is
  downloaded only when it is not there yet.
* ``$CENTERMASK_MIRROR`` (a base URL: ``http://``, ``https://`` or ``file://``) replaces the
  published host: the file is fetched from ``<mirror>/<file name>``, for sites without internet.
* The transfer itself is iopath's ``download`` (progress bar, written to a temporary name that is
  renamed when complete and removed when the transfer fails), under iopath's ``file_lock`` so that
  the processes of one machine do not download the same file together.
* The sha256 of a new file is recorded next to it (``<file>.sha256``) and checked whenever the
  cached file is used again: a file changed or damaged since fails with a clear error.
"""

import hashlib
import http.client
import os
from typing import Dict, Optional, Tuple
from urllib.parse import urlparse

from iopath.common.download import download
from iopath.common.file_io import file_lock

__all__ = ["ChecksumError", "DownloadError", "cache_dir", "cached_download", "mirrored_url"]

CACHE_ENV = "CENTERMASK_CACHE"
MIRROR_ENV = "CENTERMASK_MIRROR"

# Cached files already checked in this process: path -> (size, mtime_ns) when checked.
_verified: Dict[str, Tuple[int, int]] = {}


class DownloadError(OSError):
    """A checkpoint could not be downloaded; the message says how to provide it by hand."""


class ChecksumError(OSError):
    """A cached checkpoint no longer has the sha256 recorded when it was downloaded."""


def cache_dir() -> str:
    """``$CENTERMASK_CACHE``, default ``~/.cache/centermask``."""
    return os.path.expanduser(os.getenv(CACHE_ENV) or os.path.join("~", ".cache", "centermask"))


def mirrored_url(url: str) -> str:
    """``url``, or ``$CENTERMASK_MIRROR/<its file name>`` when a mirror is set."""
    mirror = os.getenv(MIRROR_ENV)
    if not mirror:
        return url
    return f"{mirror.rstrip('/')}/{_file_name(url)}"


def _file_name(url: str) -> str:
    name = os.path.basename(urlparse(url).path)
    if not name:
        raise ValueError(f"cannot tell a file name from the URL {url!r}")
    return name


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_recorded_sha256(path: str) -> None:
    record = path + ".sha256"
    stat = os.stat(path)
    if _verified.get(path) == (stat.st_size, stat.st_mtime_ns):
        return
    actual = _sha256(path)
    if not os.path.isfile(record):  # e.g. a file the user put into the cache by hand
        with open(record, "w") as f:
            f.write(actual + "\n")
    else:
        with open(record) as f:
            recorded = f.read().strip()
        if actual != recorded:
            raise ChecksumError(
                f"{path} has sha256 {actual}, but {recorded} was recorded in {record} when it was "
                "downloaded: the file has changed or is damaged. Delete both files to download "
                "it again."
            )
    _verified[path] = (stat.st_size, stat.st_mtime_ns)


def cached_download(
    url: str, folder: Optional[str] = None, progress: bool = True, force: bool = False
) -> str:
    """Local path of ``url``'s file in the cache (``folder``, default :func:`cache_dir`),
    downloading it (from the mirror, if one is set) when it is not cached yet, or again with
    ``force``."""
    source = mirrored_url(url)
    folder = folder or cache_dir()
    name = _file_name(url)
    path = os.path.join(folder, name)
    with file_lock(path):
        if force:
            for stale in (path, path + ".sha256"):
                if os.path.exists(stale):
                    os.remove(stale)
        if not os.path.isfile(path):
            try:
                download(source, folder, filename=name, progress=progress)
            except (OSError, http.client.HTTPException) as e:
                raise DownloadError(
                    f"Could not download {source}: {e}. Without network access, fetch the file "
                    f"on another machine and either pass it directly (MODEL.WEIGHTS "
                    f"/path/to/{name}), copy it to {path}, or set ${MIRROR_ENV} to a base URL "
                    f"(file:///folder works) that serves {name}."
                ) from e
            with open(path + ".sha256", "w") as f:
                f.write(_sha256(path) + "\n")
        _check_recorded_sha256(path)
    return path
