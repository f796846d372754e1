"""Resolution of the URLs a registry may hold: ``file://``, ``http(s)://``, ``hf://`` and relative.

``hf://[datasets/]owner/repo[@revision]/path`` names a file of a Hugging Face Hub repository; it
stays an ``hf://`` URL and is fetched by ``huggingface_hub`` (:mod:`metaprune.zoo.hub`: revision,
token, ``HF_ENDPOINT``, offline mode and the Hub cache). A relative URL is resolved against the
location of the index that holds it (a folder on disk, a URL or an ``hf://`` path), so a published
zoo folder can be moved, served over HTTP or uploaded to a Hub repository unchanged.

Where an index may send the client (:func:`check_file_source`): a local index (a file the user
chose) may name any supported URL; an index fetched from the network may only name files under its
own origin (same scheme, host and port; for ``hf://`` the same repository and revision) or explicit
``https://`` / ``hf://`` URLs, never a ``file://`` path on the user's machine nor plain ``http://``
on another host.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urljoin, urlparse
from urllib.request import url2pathname

from metaprune.errors import ZooError
from metaprune.zoo import hub

REMOTE_SCHEMES = ("http", "https")
SUPPORTED_SCHEMES = ("file", "hf", *REMOTE_SCHEMES)


def location_url(location: str | Path) -> str:
    """Absolute URL of an index location given as a local path or any supported URL."""
    text = str(location)
    scheme = urlparse(text).scheme
    if scheme == "hf":
        hub.parse(text)  # refuse a malformed one here, not at the first download
        return text
    if scheme in SUPPORTED_SCHEMES:
        return text
    if scheme and len(scheme) > 1:  # one letter is a Windows drive, not a scheme
        raise ZooError(f"unsupported URL scheme {scheme!r} in {text!r}; use one of {SUPPORTED_SCHEMES}")
    return Path(text).expanduser().resolve().as_uri()


def join_url(base: str, relative: str) -> str:
    """Resolve ``relative`` (a relative or absolute URL) against the absolute URL ``base``."""
    if hub.is_hf(base):
        return hub.join(base, relative)
    return relative if hub.is_hf(relative) else urljoin(base, relative)


def is_remote(url: str) -> bool:
    """True for URLs that need the network (``http``, ``https``, ``hf``)."""
    return urlparse(url).scheme in (*REMOTE_SCHEMES, "hf")


def local_path(url: str) -> Path:
    """The filesystem path of a ``file://`` URL."""
    parsed = urlparse(url)
    if parsed.scheme != "file":
        raise ZooError(f"{url!r} is not a file:// URL")
    return Path(url2pathname(parsed.path))


def _origin(url: str) -> tuple[str, str]:
    if hub.is_hf(url):
        return "hf", hub.repository(url)
    parsed = urlparse(url)
    return parsed.scheme, parsed.netloc.lower()


def check_file_source(index_url: str, file_url: str, what: str) -> None:
    """Refuse ``file_url`` (already resolved against ``index_url``) if an index from ``index_url`` may not name it.

    Raises:
        ZooError: a remote index names a ``file://`` URL, another scheme, or plain ``http://`` on another origin.
    """
    if not is_remote(index_url):
        return
    scheme = urlparse(file_url).scheme
    if scheme in ("https", "hf") or _origin(file_url) == _origin(index_url):
        return
    raise ZooError(f"index {index_url} names {what} at {file_url!r}: an index fetched from the network may only "
                   "name files under its own origin or explicit https:// / hf:// URLs, never local files")
