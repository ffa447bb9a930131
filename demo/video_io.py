"""Video I/O of the demo: find a codec this OpenCV can really write, and write frames.

pip's OpenCV wheels ship no x264 encoder, so :func:`probe_video_codec` tries the candidates of
:data:`VIDEO_CODEC_CANDIDATES` by writing and reading back a few frames.
"""
from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from pathlib import Path
from typing import Iterable, Iterator, Optional, Sequence, Tuple

import cv2
import numpy as np

__all__ = ["VIDEO_CODEC_CANDIDATES", "probe_video_codec", "write_video"]

logger = logging.getLogger("knet_d2.demo")

#: (fourcc, container suffix) tried in order by :func:`probe_video_codec`. pip's OpenCV wheels
#: ship no x264 encoder, so the later entries are what usually works there.
VIDEO_CODEC_CANDIDATES: Tuple[Tuple[str, str], ...] = (
    ("x264", ".mkv"),
    ("avc1", ".mp4"),
    ("mp4v", ".mp4"),
    ("MJPG", ".avi"),
)


def _codec_works(fourcc: str, suffix: str, frame_size: Tuple[int, int]) -> bool:
    """Write 3 frames with ``fourcc`` into a temp ``suffix`` file and read one back."""
    w, h = frame_size
    with tempfile.TemporaryDirectory(prefix="knet_codec_") as tmp:
        path = os.path.join(tmp, "probe" + suffix)
        writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*fourcc), 10.0, (w, h), True)
        try:
            if not writer.isOpened():
                return False
            for i in range(3):
                writer.write(np.full((h, w, 3), 40 * i, dtype=np.uint8))
        finally:
            writer.release()
        if not os.path.isfile(path) or os.path.getsize(path) == 0:
            return False
        cap = cv2.VideoCapture(path)
        try:
            ok, frame = cap.read()
        finally:
            cap.release()
        return bool(ok) and frame is not None and frame.shape[:2] == (h, w)


@contextlib.contextmanager
def _opencv_log_silenced() -> Iterator[None]:
    """Silence OpenCV's own log (its FFMPEG "Could not find encoder" ERROR lines) inside."""
    if not (hasattr(cv2, "getLogLevel") and hasattr(cv2, "setLogLevel")):
        yield  # an OpenCV build without the log-level bindings
        return
    previous = cv2.getLogLevel()
    cv2.setLogLevel(0)  # cv::utils::logging::LOG_LEVEL_SILENT
    try:
        yield
    finally:
        cv2.setLogLevel(previous)


def probe_video_codec(
    frame_size: Tuple[int, int] = (64, 64),
    candidates: Sequence[Tuple[str, str]] = VIDEO_CODEC_CANDIDATES,
    prefer_suffix: Optional[str] = None,
) -> Tuple[str, str]:
    """The first ``(fourcc, suffix)`` that really writes a readable video here.

    Each candidate is tested by writing a few frames of ``frame_size`` to a temp file and reading
    it back with ``cv2.VideoCapture`` (an opened writer alone proves nothing: without x264 OpenCV
    may still create an empty file).

    Args:
        frame_size: ``(width, height)`` of the frames to be written.
        candidates: ``(fourcc, suffix)`` pairs in order of preference.
        prefer_suffix: try candidates with this container suffix first (e.g. ``".mp4"`` when
            the user named ``out.mp4``).

    Raises:
        RuntimeError: no candidate works (the message lists them).
    """
    order = list(candidates)
    if prefer_suffix:
        order.sort(key=lambda c: c[1].lower() != prefer_suffix.lower())
    with _opencv_log_silenced():  # a failing candidate is expected, not an error
        for i, (fourcc, suffix) in enumerate(order):
            if _codec_works(fourcc, suffix, frame_size):
                if i > 0:
                    logger.info(
                        "Video codec %s unusable with this OpenCV; using %s (%s)",
                        "/".join(f"{c}{s}" for c, s in order[:i]), fourcc, suffix,
                    )
                return fourcc, suffix
    logger.error("No video codec works; OpenCV's own messages for %s follow", order[0][0])
    _codec_works(order[0][0], order[0][1], frame_size)  # again, with OpenCV's log on
    raise RuntimeError(
        "OpenCV cannot write video with any of "
        f"{', '.join(f'{c} ({s})' for c, s in order)}; install an OpenCV build with FFMPEG"
    )


def write_video(
    frames: Iterable[np.ndarray], path: Path, fourcc: str, fps: float, frame_size: Tuple[int, int]
) -> int:
    """Write BGR frames to ``path``; returns the number written.

    Raises:
        RuntimeError: the writer cannot be opened, a frame has the wrong size, or the file is
            empty afterwards.
    """
    w, h = frame_size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), float(fps), (w, h), True)
    if not writer.isOpened():
        raise RuntimeError(f"cannot open a {fourcc} video writer for {path}")
    n = 0
    try:
        for frame in frames:
            if frame.shape[:2] != (h, w):
                raise RuntimeError(
                    f"frame {n} of {path} is {frame.shape[1]}x{frame.shape[0]}, "
                    f"expected {w}x{h}"
                )
            writer.write(np.ascontiguousarray(frame))
            n += 1
    finally:
        writer.release()
    if n > 0 and (not path.is_file() or path.stat().st_size == 0):
        raise RuntimeError(f"video writer produced an empty file {path}")
    return n

