"""Validation of entry and file names, so that nothing a registry says can escape the cache.

An index is untrusted input: a name such as ``../../.ssh/id_rsa`` or ``/etc/passwd`` must be
rejected before it is ever joined to a directory.  Entry names are single path components;
file names are relative POSIX paths (``unet/model.safetensors``) whose every component is safe.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

from metaprune.errors import ZooError

_COMPONENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
_MAX_NAME_LENGTH = 200


def _is_safe_component(component: str) -> bool:
    # ".." matches no component on its own, but "a..b" would, so it is excluded explicitly.
    return bool(_COMPONENT.match(component)) and ".." not in component and len(component) <= _MAX_NAME_LENGTH


def check_entry_name(name: str) -> str:
    """Return ``name`` if it is a safe zoo entry name, else raise :class:`ZooError`.

    A safe entry name is one path component of letters, digits, ``.``, ``_``, ``+`` and ``-``
    that starts with a letter or digit and contains no ``..``.
    """
    if not isinstance(name, str) or not _is_safe_component(name):
        raise ZooError(
            f"invalid zoo entry name {name!r}: use letters, digits, '.', '_', '+', '-' only, "
            "starting with a letter or digit, with no '..' or path separators"
        )
    return name


def check_file_name(name: str) -> str:
    """Return ``name`` if it is a safe relative file name inside an entry, else raise :class:`ZooError`.

    Sub-folders are allowed (``unet/config.json``), written with ``/``; absolute paths,
    backslashes, empty, ``.`` and ``..`` components are not.
    """
    if not isinstance(name, str) or not name or "\\" in name or name.startswith("/"):
        raise ZooError(f"invalid zoo file name {name!r}: it must be a relative POSIX path inside the entry")
    if not all(_is_safe_component(part) for part in name.split("/")):
        raise ZooError(
            f"invalid zoo file name {name!r}: each path component must be letters, digits, "
            "'.', '_', '+', '-', start with a letter or digit, and contain no '..'"
        )
    return name


def safe_join(root: Path, *names: str) -> Path:
    """Join already-checked ``names`` under ``root`` and confirm the result stays inside ``root``.

    The containment check is a second line of defence behind :func:`check_file_name`
    (it also catches a symlink inside the cache that points elsewhere).
    """
    path = root.joinpath(*(PurePosixPath(name) for name in names))
    if not path.resolve().is_relative_to(root.resolve()):
        raise ZooError(f"path {path} escapes the zoo directory {root}; refusing to use it")
    return path
