"""``hf://`` locations, served by ``huggingface_hub`` (the Hub's own client), not by our download code.

An index, a ``base_url`` or a file may live in a Hugging Face Hub repository::

    hf://owner/repo/zoo/index.json                 the main branch of a model repository
    hf://owner/repo@v1.2/zoo/index.json            a tag, a branch or a commit
    hf://datasets/owner/repo@main/zoo/index.json   a dataset repository

The grammar is the Hub's (``huggingface_hub.parse_hf_uri``). A file is fetched with
``hf_hub_download``, so everything the Hub client does applies: its cache (``HF_HUB_CACHE`` or
``HF_HOME``, default ``~/.cache/huggingface/hub``) with resumable downloads and one copy per
revision, ``HF_TOKEN`` or ``hf auth login`` for private and gated repositories, ``HF_ENDPOINT`` for
a mirror or a self-hosted Hub, and ``HF_HUB_OFFLINE=1`` (or ``METAPRUNE_OFFLINE=1``) to read the
Hub cache only. The zoo then checks size and sha256 against its index and copies the file into
its own cache, as for any other source.
"""

from __future__ import annotations

import os
import posixpath
from pathlib import Path
from typing import Any

from metaprune.errors import ZooError
from metaprune.version import __version__

SCHEME = "hf://"
_TRUE_WORDS = {"1", "true", "yes", "on"}
_PREFIXES = {"model": "", "dataset": "datasets/", "space": "spaces/", "kernel": "kernels/"}


def is_hf(url: str) -> bool:
    """True for an ``hf://`` URL."""
    return url.startswith(SCHEME)


def parse(url: str) -> Any:
    """The Hub's parse (``HfUri``: type, id, revision, path_in_repo) of an ``hf://`` URL of a repository.

    Raises:
        ZooError: a malformed URL, or a bucket (not a repository).
    """
    from huggingface_hub import parse_hf_uri
    from huggingface_hub.errors import HfUriError

    try:
        uri = parse_hf_uri(url)
    except HfUriError as error:
        raise ZooError(f"invalid hf:// URL {url!r}: expected hf://[datasets/]owner/repo[@revision][/path] "
                       f"({str(error).splitlines()[0]})") from None
    if uri.type not in _PREFIXES:
        raise ZooError(f"hf:// URL {url!r} names a {uri.type}; the zoo reads files of model or dataset repositories")
    return uri


def repository(url: str) -> str:
    """``hf://[TYPE/]owner/repo[@revision]``: the repository (and revision) an ``hf://`` URL is in."""
    uri = parse(url)
    return f"{SCHEME}{_PREFIXES[uri.type]}{uri.id}" + (f"@{uri.revision}" if uri.revision else "")


def join(base: str, relative: str) -> str:
    """``relative`` (a path, or any absolute URL) resolved against the ``hf://`` URL ``base``, inside its repository.

    Like a URL, a ``base`` ending in ``/`` is a folder; otherwise its last component is replaced.

    Raises:
        ZooError: ``relative`` climbs out of the repository (``../..``).
    """
    if "://" in relative:
        return relative
    path = parse(base).path_in_repo
    folder = path if base.endswith("/") else posixpath.dirname(path)
    joined = posixpath.normpath(posixpath.join(folder, relative))
    joined = "" if joined == "." else joined
    if relative.startswith("/") or joined == ".." or joined.startswith("../"):
        raise ZooError(f"{relative!r} is not a path inside {repository(base)}")
    return f"{repository(base)}/{joined}" + ("/" if relative.endswith("/") and joined else "")


def hub_offline(offline: bool = False) -> bool:
    """``offline``, or ``HF_HUB_OFFLINE`` set (read at every call, unlike ``huggingface_hub.constants``)."""
    return offline or os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE_WORDS


def fetch(url: str, *, offline: bool = False) -> Path:
    """The local path, in the Hub cache, of the file an ``hf://`` URL names (downloaded unless cached or offline).

    ``HF_HUB_CACHE``, ``HF_ENDPOINT`` and ``HF_HUB_OFFLINE`` are read at each call; the token is the
    Hub client's own (``HF_TOKEN`` or the stored login).

    Raises:
        ZooError: offline and not in the Hub cache, no such repository, revision or file, a gated
            repository without access, or the Hub cannot be reached (one line each).
    """
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    uri = parse(url)
    if not uri.path_in_repo or url.endswith("/"):
        raise ZooError(f"hf:// URL {url!r} names no file in {repository(url)}")
    try:
        return Path(hf_hub_download(
            uri.id, uri.path_in_repo, repo_type=uri.type, revision=uri.revision,
            cache_dir=os.environ.get("HF_HUB_CACHE") or None, endpoint=os.environ.get("HF_ENDPOINT") or None,
            local_files_only=hub_offline(offline), library_name="metaprune", library_version=__version__))
    except LocalEntryNotFoundError:
        if hub_offline(offline):
            raise ZooError(f"offline mode: {url} is not in the Hugging Face cache; fetch it once with the network "
                           "(unset HF_HUB_OFFLINE / METAPRUNE_OFFLINE)") from None
        raise ZooError(f"cannot reach the Hub for {url}, and it is not in the Hugging Face cache") from None
    except GatedRepoError:
        raise ZooError(f"{repository(url)} is gated: accept its terms on the Hub and log in (HF_TOKEN or "
                       "`hf auth login`)") from None
    except RepositoryNotFoundError:
        raise ZooError(f"no Hub repository {repository(url)} (or it is private: set HF_TOKEN)") from None
    except RevisionNotFoundError:
        raise ZooError(f"{repository(url)} has no revision {uri.revision!r}") from None
    except EntryNotFoundError:
        raise ZooError(f"{repository(url)} has no file {uri.path_in_repo!r}") from None
    except (HfHubHTTPError, OSError, ValueError) as error:
        raise ZooError(f"cannot fetch {url} from the Hub: {str(error).splitlines()[0] if str(error) else error!r}; "
                       "set HF_HUB_OFFLINE=1 to use the Hub cache only") from None
