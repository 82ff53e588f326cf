"""What the CLIs show people: errors as one clear sentence and exit status 2, never a traceback; the --help format
and argparse's number types; and TensorFlow's start-up log kept quiet. No TensorFlow import here (download.py)."""
from __future__ import annotations

import argparse
import contextlib
import errno
import functools
import math
import os
import subprocess
import sys
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

EXIT_USER_ERROR = 2


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Show each flag's default and keep the epilog's examples as written. A flag without a default (None), or
    whose help says what its default is, is shown without "(default: None)"."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or "(default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


class UserError(Exception):
    """A problem with the user's input or environment, stated as one sentence naming the fix."""


def exits_cleanly(main: Callable[..., T]) -> Callable[..., T]:
    """Wrap a CLI main: a UserError prints `error: <message>` and exits 2."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            result = main(*args, **kwargs)
            sys.stdout.flush()  # here, so that a reader gone (below) is met here and not at exit
            return result
        except UserError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(EXIT_USER_ERROR)
        except BrokenPipeError:  # stdout's reader is gone (`| head`): stop quietly, as command-line tools do
            with contextlib.suppress(OSError):  # and let Python's flush at exit write nowhere
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(1)
        except KeyboardInterrupt:
            print("error: interrupted (a second Ctrl-C stops at once, without saving)", file=sys.stderr)
            sys.exit(130)
        except OSError as e:
            if e.errno == errno.ENOSPC:
                print(f"error: no space left on device ({e.filename or 'disk'}); free space and re-run",
                      file=sys.stderr)
                sys.exit(EXIT_USER_ERROR)
            if e.filename and e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
                print(f"error: cannot access {e.filename} ({e.strerror}); check its permissions, or choose another "
                      "path", file=sys.stderr)
                sys.exit(EXIT_USER_ERROR)
            raise

    return wrapper


def _number(text: str, kind: type, ok: Callable[[float], bool], need: str) -> int | float:
    """An argparse type's work: `text` as a `kind` (int or float) for which ok(value) holds, else an
    ArgumentTypeError saying it must be `need`. NaN fails every comparison, so `ok` rejects it."""
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
    if not ok(value):
        raise argparse.ArgumentTypeError(f"must be {need}, got {text}")
    return value


def positive_int(text: str) -> int:
    """argparse type: an integer > 0."""
    return _number(text, int, lambda v: v > 0, "a positive integer")


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    return _number(text, int, lambda v: v >= 0, ">= 0")


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    return _number(text, float, lambda v: 0 < v < math.inf, "a positive number")


def non_negative_float(text: str) -> float:
    """argparse type: a number >= 0."""
    return _number(text, float, lambda v: v >= 0, ">= 0")


def rate(text: str) -> float:
    """argparse type: a fraction in [0, 1)."""
    non_negative_float(text)  # the lower bound first, with its own message
    return _number(text, float, lambda v: v < 1, "below 1")


def open_fraction(text: str) -> float:
    """argparse type: a number strictly between 0 and 1."""
    return _number(text, float, lambda v: 0 < v < 1, "between 0 and 1 (exclusive)")


def fraction(text: str) -> float:
    """argparse type: a fraction in [0, 1]."""
    non_negative_float(text)
    return _number(text, float, lambda v: v <= 1, "at most 1")


# What TensorFlow's C++ libraries log at import, through absl before absl is initialised, where TF_CPP_MIN_LOG_LEVEL
# does not reach (TensorFlow 2.21): absl's notice, and INFO lines such as "I0000 00:00:1795850504.127041    5929
# port.cc:153] oneDNN custom operations are on. ...".
STARTUP_INFO = (r"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR$"
                r"|I\d{4} [\d:.]+ +\d+ [\w.-]+:\d+\] ")
# A child process passes stderr on, line by line, as it comes, without those lines: it outlives an import that
# aborts the process (TensorFlow's fatal "compiled to use AVX instructions" check), so nothing is lost.
_FILTER = """import re, sys
drop = re.compile(sys.argv[1])
for line in sys.stdin.buffer:
    if not drop.match(line.decode(errors="replace")):
        sys.stdout.buffer.write(line)
        sys.stdout.buffer.flush()
"""


def import_tensorflow_quietly() -> None:
    """Import TensorFlow without the INFO lines its C++ start-up writes to stderr whatever TF_CPP_MIN_LOG_LEVEL says
    (set to 1 unless it is set: INFO lines off, warnings and errors on); everything else the import writes is passed
    on as it comes. A no-op once TensorFlow is imported; with TF_CPP_MIN_LOG_LEVEL 0 every line is shown."""
    if "tensorflow" in sys.modules:
        return
    level = os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1").strip()
    if level.isdigit() and int(level) == 0:
        import tensorflow  # noqa: F401
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, AttributeError, ValueError):  # no stderr to keep quiet (closed, or None under pythonw)
        import tensorflow  # noqa: F401
        return
    try:
        child = subprocess.Popen([sys.executable, "-I", "-S", "-c", _FILTER, STARTUP_INFO], stdin=subprocess.PIPE,
                                 stdout=saved)
        os.dup2(child.stdin.fileno(), 2)
    except OSError:  # no process or descriptor to spare: the lines are shown
        os.close(saved)
        import tensorflow  # noqa: F401
        return
    try:
        import tensorflow  # noqa: F401
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        child.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):  # a process the import started holds the pipe
            child.wait(timeout=10)
