"""User-facing errors: one clear sentence and exit status 2, never a traceback."""
from __future__ import annotations

import errno
import functools
import sys
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

EXIT_USER_ERROR = 2


class UserError(Exception):
    """A problem with the user's input or environment, stated as one sentence naming the fix."""


def exits_cleanly(main: Callable[..., T]) -> Callable[..., T]:
    """Wrap a CLI main: a UserError prints `error: <message>` and exits 2."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except UserError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(EXIT_USER_ERROR)
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
