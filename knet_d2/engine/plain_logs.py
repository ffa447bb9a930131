"""Log files without terminal colour codes.

Detectron2 colours its console output, and some messages carry colour codes in their text
(``default_setup`` logs the config highlighted by pygments; the dataset histogram is
``colored``). Those ANSI escape sequences end up in ``OUTPUT_DIR/log.txt`` and in any
redirected console output. :func:`strip_ansi_in_log_files` wraps the formatter of every
logging handler that writes to a file (any stream that is not a terminal), so that what it
writes has the escape sequences removed; terminals keep their colours.
"""
from __future__ import annotations

import logging
import re

from detectron2.utils.logger import setup_logger

__all__ = ["ANSI_ESCAPE", "PlainTextFormatter", "strip_ansi_in_log_files", "setup_d2_loggers"]

#: CSI escape sequences (colours, cursor movement), e.g. ``\x1b[38;5;204m``
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")


class PlainTextFormatter(logging.Formatter):
    """Formats with the wrapped formatter, then removes ANSI escape sequences."""

    def __init__(self, inner: logging.Formatter | None) -> None:
        super().__init__()
        self.inner = inner or logging.Formatter()

    def format(self, record: logging.LogRecord) -> str:
        return ANSI_ESCAPE.sub("", self.inner.format(record))


def _writes_to_terminal(handler: logging.Handler) -> bool:
    stream = getattr(handler, "stream", None)
    try:
        return bool(stream is not None and stream.isatty())
    except (AttributeError, ValueError):  # closed or exotic streams
        return False


def strip_ansi_in_log_files() -> int:
    """Wrap the formatters of all non-terminal stream handlers of all loggers (idempotent).

    Returns:
        The number of handlers wrapped by this call.
    """
    loggers = [logging.getLogger()] + [
        lg for lg in logging.Logger.manager.loggerDict.values() if isinstance(lg, logging.Logger)
    ]
    wrapped = 0
    for lg in loggers:
        for handler in lg.handlers:
            if not isinstance(handler, logging.StreamHandler) or _writes_to_terminal(handler):
                continue
            if isinstance(handler.formatter, PlainTextFormatter):
                continue
            handler.setFormatter(PlainTextFormatter(handler.formatter))
            wrapped += 1
    return wrapped


def setup_d2_loggers(output_dir: str, rank: int) -> None:
    """Create the ``fvcore`` and ``detectron2`` loggers exactly as D2's ``default_setup`` does
    (``setup_logger`` is cached, so ``default_setup`` then reuses them) and strip colour codes
    from their file output, so that the config ``default_setup`` logs reaches ``log.txt`` plain.
    """
    setup_logger(output_dir, distributed_rank=rank, name="fvcore")
    setup_logger(output_dir, distributed_rank=rank)
    strip_ansi_in_log_files()
