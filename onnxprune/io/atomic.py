"""Writing outputs atomically: a staging directory beside the output, signals held while
files move into place, a failed write leaving nothing behind."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import onnx

from ..errors import OutputWriteError
from .sizes import external_data_files

# errno values that can only mean the output could not be written.
_WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS})


# Signals whose handlers raise (Ctrl-C, and SIGTERM / SIGHUP under the CLI).
_STOP_SIGNALS = frozenset({signal.SIGINT, signal.SIGTERM, signal.SIGHUP})


@contextlib.contextmanager
def deferred_signals() -> Iterator[None]:
    """Hold SIGINT / SIGTERM / SIGHUP until the block ends, so that creating or removing a
    temporary directory is never cut in half; a signal that came meanwhile is handled (raises)
    as the block ends.

    Held in Python, not with ``pthread_sigmask``: a mask covers only the calling thread, and
    once onnxruntime's (or the gzip sizing's) worker threads exist the kernel may deliver the
    signal to one of them, after which CPython still runs the handler in the main thread,
    inside the block (a SIGTERM during ``mkdtemp`` then left the new staging directory behind).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []

    def hold(signum: int, frame: object) -> None:
        pending.append(signum)

    previous: dict[signal.Signals, Any] = {}
    try:
        for stop_signal in _STOP_SIGNALS:
            previous[stop_signal] = signal.signal(stop_signal, hold)
        yield
    finally:
        for stop_signal, handler in previous.items():
            # A handler installed inside the block (the CLI's own) stays. None: a handler not
            # installed from Python; the default action stands in for it.
            if signal.getsignal(stop_signal) is hold:
                signal.signal(stop_signal, signal.SIG_DFL if handler is None else handler)
        if pending:
            # Whatever handles the signal now handles what was held.
            _deliver(pending[0], signal.getsignal(pending[0]))


def _deliver(signum: int, handler: Any) -> None:
    """What ``handler`` would have done with ``signum`` had it not been held."""
    if callable(handler):
        handler(signum, None)
    elif handler in (signal.SIG_DFL, None):
        signal.raise_signal(signum)  # the default action, with the handler now restored


@contextlib.contextmanager
def staging_dir(output_path: Path) -> Iterator[Path]:
    """A temporary directory beside the output, removed whatever happens.

    Beside the output (same filesystem) so that publishing is an atomic rename. An OSError
    while it is open that concerns a file inside it, or that can only come from writing (disk
    full, quota, read-only filesystem), becomes an OutputWriteError (exit 4).
    """
    parent = output_path.parent if str(output_path.parent) else Path(".")
    tmp: Path | None = None
    try:
        try:
            with deferred_signals():  # a signal raises once ``tmp`` is set
                tmp = Path(tempfile.mkdtemp(prefix=".onnxprune-", dir=parent))
        except OSError as err:
            raise OutputWriteError(f"cannot write to {parent}: {first_line(err)}") from err
        with write_errors(tmp, parent):
            yield tmp
    finally:
        if tmp is not None:
            with deferred_signals():
                shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def write_errors(directory: Path, shown: Path | None = None) -> Iterator[None]:
    """An OSError about a file inside ``directory``, or one that can only come from writing
    (disk full, quota, read-only filesystem), becomes an OutputWriteError naming ``shown``."""
    try:
        yield
    except OSError as err:
        inside = err.filename is not None and Path(str(err.filename)).parent == directory
        if inside or err.errno in _WRITE_ERRNOS:
            where = shown if shown is not None else directory
            raise OutputWriteError(f"cannot write to {where}: {first_line(err)}") from err
        raise


def write_model(
    model: onnx.ModelProto, path: Path, external_data: bool, size_threshold: int = 1024
) -> None:
    """Write ``model`` to ``path`` (inside a staging directory), with external data if asked:
    every tensor of ``size_threshold`` bytes or more goes to ``<path name>.data``."""
    try:
        if external_data:
            onnx.save_model(
                model,
                str(path),
                save_as_external_data=True,
                all_tensors_to_one_file=True,
                location=path.name + ".data",
                size_threshold=size_threshold,
            )
        else:
            onnx.save_model(model, str(path))
    except OSError as err:
        raise OutputWriteError(f"cannot write {path.name}: {first_line(err)}") from err


def publish(staged_model: Path, output_path: Path, extra: dict[Path, Path] | None = None) -> None:
    """Move a staged model (and its external data) into place; data first, model last.

    ``extra`` maps further staged files (the JSON report, the recipe) to their destinations;
    they are moved just before the model. When any move fails, the files already moved by this
    call are removed again: a failed publish leaves neither a model nor its side files.
    """
    data_files = external_data_files(staged_model)
    moved: list[Path] = []
    try:
        for data in data_files:
            destination = output_path.parent / data.name
            os.replace(data, destination)
            moved.append(destination)
        for staged, destination in (extra or {}).items():
            shutil.move(staged, destination)  # may cross filesystems
            moved.append(destination)
        os.replace(staged_model, output_path)
    except BaseException as err:  # also a signal (Ctrl-C, SIGTERM) between two moves
        for path in moved:
            with contextlib.suppress(OSError):
                path.unlink()
        if isinstance(err, OSError):
            raise OutputWriteError(f"cannot write {output_path}: {first_line(err)}") from err
        raise


def first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
