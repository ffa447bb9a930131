"""Which files a drawing run reads and writes: input expansion and the output-path policy.

Used by :mod:`knet_d2.rendering` and ``demo/demo.py``. The policy: ``--output`` is a directory
when it exists as one, ends with a path separator, has no suffix or more than one input is
given (files are then named after the inputs); otherwise it is the one output file. An output
that would overwrite an input is refused before anything is written.
"""
from __future__ import annotations

import glob
import logging
import os
from pathlib import Path
from typing import Dict, List, Sequence, Union

import cv2

__all__ = [
    "IMAGE_EXTENSIONS",
    "expand_inputs",
    "image_output_paths",
    "output_is_directory",
    "video_output_path",
]

logger = logging.getLogger(__name__)

#: File name suffixes treated as images when a directory is given as input.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")

PathLike = Union[str, os.PathLike]


def expand_inputs(patterns: Sequence[PathLike]) -> List[Path]:
    """Turn ``--input`` values into a list of files.

    Each value may be a file, a directory (its files with an :data:`IMAGE_EXTENSIONS` suffix,
    sorted, not recursive) or a glob pattern (``**`` recurses). Duplicates are removed, order kept.

    Raises:
        FileNotFoundError: a value matches nothing (the message names it).
    """
    files: List[Path] = []
    for pattern in patterns:
        p = Path(pattern).expanduser()
        if p.is_dir():
            found = sorted(
                q for q in p.iterdir() if q.is_file() and q.suffix.lower() in IMAGE_EXTENSIONS
            )
            if not found:
                raise FileNotFoundError(
                    f"input directory {p} has no images ({', '.join(IMAGE_EXTENSIONS)})"
                )
        elif p.is_file():
            found = [p]
        else:
            found = sorted(Path(m) for m in glob.glob(str(p), recursive=True) if Path(m).is_file())
            if not found:
                raise FileNotFoundError(f"input {pattern!s} matches no file")
        files.extend(found)
    unique: Dict[Path, None] = {}
    for f in files:
        unique.setdefault(f, None)
    return list(unique)


def _same_path(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and a.samefile(b))
    except OSError:
        return False


def _refuse_inputs(outputs: Sequence[Path], inputs: Sequence[Path]) -> None:
    resolved = {p.resolve() for p in inputs}
    for out in outputs:
        if out.resolve() in resolved or any(_same_path(out, i) for i in inputs):
            raise ValueError(
                f"refusing to write {out}: it is one of the inputs; pick another --output"
            )


def output_is_directory(output: PathLike, n_inputs: int = 1) -> bool:
    """Whether ``--output`` means a directory: it exists as one, ends with a path separator,
    has no suffix, or more than one input is given."""
    text = os.fspath(output)
    path = Path(text).expanduser()
    return path.is_dir() or text.endswith(("/", os.sep)) or path.suffix == "" or n_inputs > 1


def image_output_paths(inputs: Sequence[Path], output: PathLike) -> List[Path]:
    """Output file of each input image, creating the output directory when missing.

    ``output`` is a directory when it exists as one, ends with a separator, has no suffix or more
    than one input is given; files are then named after the inputs (``_1``, ``_2``... added on
    name clashes). Otherwise it is the single output file.

    Raises:
        ValueError: an output would overwrite an input, or OpenCV cannot write the suffix.
    """
    is_dir = output_is_directory(output, len(inputs))
    output = Path(output).expanduser()
    if not inputs:
        return []
    if is_dir:
        if output.exists() and not output.is_dir():
            raise ValueError(
                f"--output {output} is a file but {len(inputs)} inputs were given; "
                "pass a directory"
            )
        outs, used = [], set()
        for inp in inputs:
            suffix = inp.suffix.lower() if inp.suffix.lower() in IMAGE_EXTENSIONS else ".png"
            name, n = inp.stem + suffix, 0
            while name in used:
                n += 1
                name = f"{inp.stem}_{n}{suffix}"
            used.add(name)
            outs.append(output / name)
    else:
        if not cv2.haveImageWriter(str(output)):
            raise ValueError(
                f"OpenCV cannot write images named like {output} (end --output with '/' "
                "to mean a directory)"
            )
        outs = [output]
    _refuse_inputs(outs, inputs)
    outs[0].parent.mkdir(parents=True, exist_ok=True)
    return outs


def video_output_path(video: Path, output: PathLike, suffix: str) -> Path:
    """Output file for a video: ``output/<video stem><suffix>`` or ``output`` itself.

    When ``output`` names a file whose suffix differs from the container that works
    (``suffix``, from :func:`probe_video_codec`), the suffix is replaced and a warning logged.

    Raises:
        ValueError: the output would overwrite the input video.
    """
    is_dir = output_is_directory(output, 1)
    output = Path(output).expanduser()
    if is_dir:
        out = output / (video.stem + suffix)
    else:
        out = output
        if output.suffix.lower() != suffix:
            out = output.with_suffix(suffix)
            logger.warning(
                "No working video codec for %s files here; writing %s instead", output.suffix, out
            )
    _refuse_inputs([out], [video])
    out.parent.mkdir(parents=True, exist_ok=True)
    return out

