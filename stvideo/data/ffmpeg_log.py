"""FFmpeg's own log lines, from every decoder, as data: captured around a decode, routed to logging otherwise.

Up to three FFmpeg builds live in one stvideo process: PyAV's (``av.libs``), decord's (``decord.libs``, an
older libavutil with its own log callback) and, once the torchcodec backend is used, the system FFmpeg
that torchcodec links (``libavutil.so.57`` on Debian 12). All are covered:

* PyAV: ``av.logging.set_level(av.logging.ERROR)`` installs PyAV's callback (PyAV's default drops every
  line); lines below ERROR are filtered in C without taking the GIL, so decoding a good file costs
  nothing extra. Errors go to ``av.logging.Capture(local=False)`` while a capture is open (all threads,
  so frame-threaded decoding is covered) and to the ``libav.<component>`` Python loggers otherwise.
* decord and torchcodec: a ``ctypes`` callback installed with ``av_log_set_callback`` in every libavutil
  the process has loaded besides PyAV's (``hook_loaded_libraries`` again after torchcodec loads its
  FFmpeg). It formats lines with that library's ``av_log_format_line2`` and, like PyAV's, sends them to
  the open capture or to ``libav.<component>`` (WARNING and worse). Without it decord's FFmpeg prints
  every line to stderr. torchcodec sets its FFmpeg's level to QUIET on every open unless
  ``TORCHCODEC_FFMPEG_LOG_LEVEL`` says otherwise; ``hook_loaded_libraries`` sets it to ERROR (kept if
  the user set it).

``capture()`` collects the ERROR-and-worse lines of both libraries while it is open. Captures are
process-wide: stvideo decodes one file at a time per process (DataLoader workers are processes), so the
lines belong to that file. A user's own ``av.logging.set_level`` is kept if it was set before.

FFmpeg calls the ``ctypes`` callback for every line, TRACE and DEBUG included (its level filter sits in
its default callback): 184 calls to open a 36-frame h264 clip with decord and decode 2 frames. A signal
handler of the main thread can run inside any of them. ctypes cannot raise from a callback: it prints
what the handler raised and drops it. ``capture()`` keeps such an interrupt (``KeyboardInterrupt`` on
Ctrl-C, ``SystemExit`` from submitit's handler of SLURM's preemption signal) and raises it when it
closes, after the decoder call returned.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import av
import av.logging

ERROR = 16  # AV_LOG_ERROR: this level and below (FATAL 8, PANIC 0) count as decoder errors
WARNING = 24  # AV_LOG_WARNING: the most verbose level routed to Python logging outside a capture


@dataclass(frozen=True)
class LogLine:
    """One FFmpeg log line: libav level (lower is worse), component (``h264``, ``matroska,webm``), text."""

    level: int
    component: str
    message: str

    def __str__(self) -> str:
        return f"[{self.component}] {self.message}" if self.component else self.message


def _python_level(level: int) -> int:
    return logging.CRITICAL if level <= 8 else logging.ERROR if level <= ERROR else logging.WARNING


_lock = threading.Lock()
_captures: list[list[LogLine]] = []  # open captures of the decord callback (innermost last)
_installed_pid: int | None = None
_hooked: set[str] = set()  # real paths of the libavutils whose log callback is ours
_callbacks: list[object] = []  # keep the ctypes callbacks alive
_callback_functions: list[object] = []  # the Python functions behind them (sys.unraisablehook names these)
_CALLBACK = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)


def _loaded_libavutils() -> list[str]:
    """Paths of the libavutil shared objects mapped into this process."""
    paths = []
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                path = line.rstrip("\n").split(maxsplit=5)[-1]
                if "libavutil" in os.path.basename(path) and path not in paths:
                    paths.append(path)
    except OSError:  # not Linux: decord's lines keep going to stderr
        return []
    return paths


def _pyav_libavutil() -> str:
    folder = os.path.realpath(os.path.join(os.path.dirname(av.__file__), os.pardir, "av.libs"))
    return folder + os.sep


def _install_foreign(path: str) -> None:
    lib = ctypes.CDLL(path)
    fmt_line = lib.av_log_format_line2
    fmt_line.argtypes = [
        ctypes.c_void_p,
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_void_p,
        ctypes.c_char_p,
        ctypes.c_int,
        ctypes.POINTER(ctypes.c_int),
    ]

    def callback(ptr: int, level: int, fmt: bytes, args: int) -> None:
        if level > WARNING:  # most calls: per-packet TRACE/DEBUG lines, dropped before any work
            return
        buf = ctypes.create_string_buffer(1024)
        prefix = ctypes.c_int(1)
        fmt_line(ptr, level, fmt, args, buf, 1024, ctypes.byref(prefix))
        text = buf.value.decode("utf-8", "backslashreplace").strip()
        component = ""
        if text.startswith("[") and " @ 0x" in text.split("]", 1)[0]:
            head, text = text[1:].split("]", 1)
            component, text = head.split(" @ ", 1)[0], text.strip()
            component = "" if component == "NULL" else component  # a context without a class name
        line = LogLine(level, component, text)
        with _lock:
            target = _captures[-1] if _captures else None
        if target is not None:
            if level <= ERROR:
                target.append(line)
            return
        logging.getLogger(f"libav.{component or 'generic'}").log(_python_level(level), text)

    c_callback = _CALLBACK(callback)
    _callbacks.append(c_callback)
    _callback_functions.append(callback)
    lib.av_log_set_callback(c_callback)


def install() -> None:
    """Route both FFmpeg builds' log lines (idempotent per process; call before decoding)."""
    global _installed_pid
    if _installed_pid == os.getpid():
        return
    _installed_pid = os.getpid()
    if av.logging.get_level() is None:  # PyAV's default: every line dropped, errors unseen
        av.logging.set_level(av.logging.ERROR)
    # PyAV drops a line equal to the one before (by default): the same damaged file decoded twice in a
    # process would then show no error the second time.
    av.logging.set_skip_repeated(False)
    if _callbacks:  # forked child: the parent's callbacks are still installed and valid
        return
    hook_loaded_libraries()


def hook_loaded_libraries() -> None:
    """Install the callback in every loaded libavutil other than PyAV's that has none of ours yet
    (call after loading a library that brings its own FFmpeg, e.g. torchcodec's system FFmpeg)."""
    os.environ.setdefault("TORCHCODEC_FFMPEG_LOG_LEVEL", "ERROR")
    own = _pyav_libavutil()
    for path in _loaded_libavutils():
        real = os.path.realpath(path)
        if not real.startswith(own) and real not in _hooked:
            _hooked.add(real)
            _install_foreign(path)


class Capture:
    """The FFmpeg ERROR (and worse) lines of both decoders logged while ``capture()`` is open."""

    def __init__(self) -> None:
        self._foreign: list[LogLine] = []  # decord's and torchcodec's FFmpeg
        self._pyav: list[tuple[int, str, str]] = []

    def __len__(self) -> int:
        """Lines so far (cheap: call it between frames to find the first bad one)."""
        return len(self._foreign) + sum(1 for level, _, _ in self._pyav if level <= ERROR)

    def drop_foreign(self) -> None:
        """Forget the lines of decord's and torchcodec's FFmpeg (a PyAV decode of the file follows)."""
        del self._foreign[:]

    @property
    def lines(self) -> list[LogLine]:
        pyav = [LogLine(lv, name, msg.strip()) for lv, name, msg in self._pyav if lv <= ERROR]
        return self._foreign + pyav


@contextlib.contextmanager
def capture() -> Iterator[Capture]:
    """Collect the FFmpeg ERROR (and worse) lines of both decoders while open; raise on close an
    interrupt that a signal handler raised inside the log callback (see the module docstring)."""
    install()
    cap = Capture()
    interrupts: list[BaseException] = []
    previous_hook = sys.unraisablehook

    def keep_interrupts(unraisable: sys.UnraisableHookArgs) -> None:
        exc = unraisable.exc_value
        if unraisable.object in _callback_functions and exc is not None and not isinstance(exc, Exception):
            interrupts.append(exc)
        else:
            previous_hook(unraisable)

    sys.unraisablehook = keep_interrupts
    with _lock:
        _captures.append(cap._foreign)
    pyav = av.logging.Capture(local=False)
    cap._pyav = pyav.__enter__()
    try:
        yield cap
    finally:
        pyav.__exit__(None, None, None)
        with _lock:
            for i in range(len(_captures) - 1, -1, -1):
                if _captures[i] is cap._foreign:  # identity: two empty captures compare equal
                    del _captures[i]
                    break
        if sys.unraisablehook is keep_interrupts:
            sys.unraisablehook = previous_hook
        if interrupts:
            raise interrupts[0]
