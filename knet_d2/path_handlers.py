"""``file://`` URLs for Detectron2's ``PathManager`` (``MODEL.WEIGHTS file:///data/model.pth``).

iopath resolves local paths, ``http(s)://`` and ``detectron2://`` but not ``file://``; the
:class:`FileURLHandler` registered here maps ``file:///abs/path`` (percent-escapes decoded) to
the local file, without copying it.
"""
from __future__ import annotations

import os
from typing import IO, Any, List, Union
from urllib.parse import unquote, urlparse

from detectron2.utils.file_io import PathManager
from iopath.common.file_io import PathHandler

__all__ = ["FileURLHandler", "file_url_to_path"]


def file_url_to_path(url: str) -> str:
    """``file:///a/b%20c.pth`` -> ``/a/b c.pth``.

    Raises:
        ValueError: the URL names a host (``file://server/...``), which is not a local file.
    """
    parsed = urlparse(url)
    if parsed.netloc not in ("", "localhost"):
        raise ValueError(f"{url}: file:// URLs must name a local file (file:///path)")
    return unquote(parsed.path)


class FileURLHandler(PathHandler):
    """Resolve ``file://`` URLs to local files."""

    PREFIX = "file://"

    def _get_supported_prefixes(self) -> List[str]:
        return [self.PREFIX]

    def _get_local_path(self, path: str, force: bool = False, **kwargs: Any) -> str:
        self._check_kwargs(kwargs)
        local = file_url_to_path(path)
        if not os.path.exists(local):
            raise FileNotFoundError(f"{path}: no such file ({local})")
        return local

    def _open(self, path: str, mode: str = "r", buffering: int = -1, **kwargs: Any
              ) -> Union[IO[str], IO[bytes]]:
        self._check_kwargs(kwargs)
        return open(file_url_to_path(path), mode, buffering=buffering)

    def _exists(self, path: str, **kwargs: Any) -> bool:
        self._check_kwargs(kwargs)
        return os.path.exists(file_url_to_path(path))

    def _isfile(self, path: str, **kwargs: Any) -> bool:
        self._check_kwargs(kwargs)
        return os.path.isfile(file_url_to_path(path))


if FileURLHandler.PREFIX not in getattr(PathManager, "_path_handlers", {}):
    PathManager.register_handler(FileURLHandler())
