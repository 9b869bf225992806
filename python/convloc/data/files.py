"""Files in and out: images read only after their size is checked, whole sets read by threads,
outputs that appear whole or not at all, and data sets that replace what an earlier run wrote."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import numpy as np

# The largest image read (8192 x 8192): its size is in the file's header, so a bigger one (a
# "decompression bomb" of a few kB that unpacks to gigabytes) is refused before it is decoded.
MAX_IMAGE_PIXELS = 2**26

T = TypeVar("T")
R = TypeVar("R")


@contextmanager
def open_image(path: str | os.PathLike):
    """``PIL.Image.open(path)``, once the size in its header is checked: ValueError naming the
    path for a file that is not an image or has more than :data:`MAX_IMAGE_PIXELS` pixels."""
    from PIL import Image

    try:
        im = Image.open(path)
    except Image.DecompressionBombError as e:  # (PIL's own, larger, limit: found by Image.open)
        raise ValueError(
            f"{path}: more than the {MAX_IMAGE_PIXELS} pixels read (refused before decoding: {e})"
        ) from None
    except Image.UnidentifiedImageError:
        raise ValueError(f"{path}: not an image file PIL can read") from None
    with im:
        w, h = im.size
        if w * h > MAX_IMAGE_PIXELS:
            raise ValueError(
                f"{path}: a {w}x{h} image ({w * h} pixels), more than the {MAX_IMAGE_PIXELS} read "
                "(refused before decoding)"
            )
        yield im


def read_image(path: str | os.PathLike, mode: str | None = None) -> np.ndarray:
    """The image at ``path`` (see :func:`open_image`) as a NumPy array, converted to PIL ``mode``
    ("RGB", "L", ...) when given."""
    with open_image(path) as im:
        return np.asarray(im if mode is None or im.mode == mode else im.convert(mode))


def read_ahead(read: Callable[[T], R], items: Iterable[T], workers: int = 0) -> Iterator[R]:
    """``read(item)`` for each item, in order, as they are taken; with ``workers`` threads, up to
    ``workers`` items are read ahead of the one taken (0: each is read when taken, in this thread).

    Threads suit image reading: Pillow and NumPy release the GIL while they decode and convert,
    and the arrays need no pickling back from worker processes. An exception raised by ``read``
    reaches the caller as it was, when its item is taken."""
    if workers < 0:
        raise ValueError(f"workers: expected >= 0, got {workers}")
    if workers == 0:
        yield from map(read, items)
        return
    with ThreadPoolExecutor(workers) as pool:
        pending: deque = deque()
        for item in items:
            pending.append(pool.submit(read, item))
            if len(pending) > workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def read_all(read: Callable[[T], R], items: Iterable[T], workers: int = 0) -> list[R]:
    """``[read(item) for item in items]``, read by ``workers`` threads (:func:`read_ahead`): the
    sets the segmentation and face trainers hold in memory."""
    if workers < 0:  # (said at once, not when the first item is taken)
        raise ValueError(f"workers: expected >= 0, got {workers}")
    return list(read_ahead(read, items, workers))


@contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """Yields a temporary path beside ``path`` (same suffix, so that writers infer the same
    format); once the block ends without error it is renamed to ``path`` in one step, so that
    ``path`` is never half-written. On an error it is removed and ``path`` is left as it was."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def fresh_tree(root: str | os.PathLike) -> Iterator[Path]:
    """Yields a new, empty directory beside ``root`` to write a data set into. When the block ends
    without error, each file and folder written there replaces the one of that name in ``root``
    (made when missing), so that nothing of an earlier data set in those folders remains; other
    entries of ``root`` are left alone. On an error the new directory is removed and ``root`` is
    left as it was."""
    root = Path(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root.parent, prefix=f".{root.name}."))
    try:
        yield tmp
        root.mkdir(exist_ok=True)
        for entry in sorted(tmp.iterdir()):
            old = root / entry.name
            if old.is_dir() and not old.is_symlink():
                shutil.rmtree(old)
            elif old.exists() or old.is_symlink():
                old.unlink()
            os.replace(entry, old)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
