"""Published weight files by name: downloaded once into a cache, as timm and torchvision do.

A weight-file argument that is a published file's bare name (`rn50-nhwc_cos90.h5`) and not a
local path is looked up in the cache (`$NNABLA_IMAGENET_CACHE`, default
`~/.cache/nnabla-imagenet`) and downloaded there first if needed, from the official address or
`$NNABLA_IMAGENET_WEIGHTS_URL` (a mirror). The download goes to `<name>.part` with a progress
bar, resumes with an HTTP range request where the server allows it, is checked against the
size the server announced and only then renamed into place, so a partial file never looks
complete. Every failure is one line naming the address and the cache path.
"""
from __future__ import annotations

import http.client
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from typing import TYPE_CHECKING, Optional

from ..process.atomic import check_can_create
from ..process.errors import UserError
from .published import BASE_URL, published

if TYPE_CHECKING:  # (utils.process.comm loads NNabla)
    from ..process.comm import Communicator

CACHE_ENV = "NNABLA_IMAGENET_CACHE"
URL_ENV = "NNABLA_IMAGENET_WEIGHTS_URL"
TIMEOUT_ENV = "NNABLA_IMAGENET_DOWNLOAD_TIMEOUT"
CHUNK = 1 << 20
# Seconds without an answer or data before a download is given up (and can be resumed):
# a server that accepts and never answers held the user a minute in silence.
DEFAULT_TIMEOUT = 30.0


class DownloadError(UserError, OSError):
    """A published weight file that could not be fetched; the message names the address."""


def cache_dir() -> str:
    return os.path.expanduser(os.environ.get(CACHE_ENV) or "~/.cache/nnabla-imagenet")


def download_timeout() -> float:
    """Seconds to wait for the server: $NNABLA_IMAGENET_DOWNLOAD_TIMEOUT (for slow links), or
    DEFAULT_TIMEOUT."""
    text = os.environ.get(TIMEOUT_ENV) or str(DEFAULT_TIMEOUT)
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value < float("inf"):
        raise DownloadError(f"${TIMEOUT_ENV} must be a positive number of seconds, got {text!r}")
    return value


def base_url() -> str:
    url = os.environ.get(URL_ENV) or BASE_URL
    return url if url.endswith("/") else url + "/"


def resolve_weights(path: str, download: bool = True, comm: Optional[Communicator] = None
                    ) -> str:
    """The file to read for the weight-file argument `path`: `path` itself when it exists or
    is not a published file's bare name; else the cached copy, downloaded first if needed.

    Under MPI (`comm`) rank 0 downloads while the others wait, then every rank reads the
    cached copy.
    """
    known = published(path)
    if os.path.exists(path) or known is None or os.path.dirname(path):
        return path
    cached = os.path.join(cache_dir(), known.file)
    if comm is not None and comm.size > 1:
        if comm.is_main:
            resolve_weights(path, download)
        comm.barrier()
    if os.path.isfile(cached):
        return cached
    url = base_url() + known.file
    if not download:
        raise DownloadError(f"{path}: not in the cache and --no-download was given: "
                            f"download {url} to {cached}")
    fetch(url, cached)
    return cached


def fetch(url: str, destination: str) -> None:
    """Download `url` to `destination` through `<destination>.part`, resuming a partial one."""
    from tqdm import tqdm

    partial = destination + ".part"
    folder = os.path.dirname(destination) or "."
    check_can_create(folder, f"weight cache (${CACHE_ENV})")
    os.makedirs(folder, exist_ok=True)
    have = os.path.getsize(partial) if os.path.isfile(partial) else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    timeout = download_timeout()
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # the range is past the end: start again
            os.remove(partial)
            return fetch(url, destination)
        raise DownloadError(f"{url}: HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        if isinstance(reason, TimeoutError):  # (socket.timeout is one)
            host = urllib.parse.urlsplit(url).netloc
            raise DownloadError(f"cannot download {url}: {host} did not answer within "
                                f"{timeout:g} s (set ${TIMEOUT_ENV} for a slow link, or "
                                f"${URL_ENV} to a mirror; or put the file in {destination} "
                                "yourself)") from None
        raise DownloadError(f"cannot download {url} ({reason}); put the file in {destination} "
                            f"yourself, or set {URL_ENV} to a mirror") from None
    with response:
        resumed = response.status == 206
        if not resumed:
            have = 0  # the server sent the whole file
        length = response.headers.get("Content-Length")
        total = have + int(length) if length is not None else None
        with open(partial, "ab" if resumed else "wb") as out, \
                tqdm(total=total, initial=have, unit="B", unit_scale=True, file=sys.stderr,
                     desc=f"downloading {os.path.basename(destination)}") as bar:
            try:
                while True:
                    chunk = response.read(CHUNK)
                    if not chunk:
                        break
                    out.write(chunk)
                    bar.update(len(chunk))
            except (OSError, ValueError, http.client.HTTPException) as e:  # cut, timed out
                out.flush()
                raise DownloadError(_interrupted(url, partial, total, e)) from None
            out.flush()
            os.fsync(out.fileno())
    size = os.path.getsize(partial)
    if total is not None and size != total:
        raise DownloadError(_interrupted(url, partial, total, "the connection closed early"))
    os.replace(partial, destination)


def _interrupted(url: str, partial: str, total: Optional[int], why: object) -> str:
    size = os.path.getsize(partial)
    of = f" of {total}" if total is not None else ""
    return (f"download of {url} interrupted at {size}{of} bytes ({why}); run the command again "
            f"to resume it ({partial})")
