"""The errors a user can fix, told apart from programming errors.

A `UserError` is a fault in what the user gave or in the machine the script runs on: a flag
value, a file that is missing, unreadable, malformed or made for another network, an output
folder that is read-only, full or in use, a run that diverged. A script ends on one with a
single line on stderr and `USER_ERROR_STATUS` (see `utils.process.run`); any other exception is
a bug and keeps its traceback.

Each module's own error derives from `UserError` and from the built-in type that fits it
(ValueError for contents, OSError for the file system), so that code catching the built-in
type keeps working.
"""
from __future__ import annotations

from typing import Optional

# Exit statuses of every script (docs/troubleshooting.md lists them): 0 done; 1 a bug (with its
# traceback); 2 a user error (one line); 3 an export whose files failed their verification;
# 75 a training run stopped on request (resumable); 124 a hung rank; 130 Ctrl-C.
USER_ERROR_STATUS = 2
INTERRUPTED_STATUS = 130  # 128 + SIGINT, what a shell reports for Ctrl-C


class UserError(Exception):
    """A failure the user can fix; its message is one line naming what they gave."""


class UsageError(UserError, ValueError):
    """Options that cannot be used together, or not on this machine."""


class OutputError(UserError, OSError):
    """An output location that cannot take the files: read-only, full, in use or not a folder."""


class TrainingDiverged(UserError, FloatingPointError):
    """A run whose loss or parameters became non-finite."""


class NonFiniteOutputs(UserError, FloatingPointError):
    """A network whose outputs overflowed: their errors would read as right answers."""


class DataError(UserError, ValueError):
    """A data file or folder that cannot be used; the message names it."""


def user_error_message(error: BaseException) -> Optional[str]:
    """The one line for an error the user can fix, None for a bug (which keeps its traceback).

    User errors are `UserError`s and the operating system's refusals of a file operation (an
    OSError with an errno: a missing file, a permission, a full disk), which name the file and
    which no programming error of this project raises.
    """
    if isinstance(error, UserError) or (isinstance(error, OSError) and error.errno is not None):
        return f"error: {error}"
    return None
