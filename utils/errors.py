"""The errors a user can fix, told apart from programming errors.

A `UserError` is a fault in what the user gave or in the machine the script runs on: a flag
value, a file that is missing, unreadable, malformed or made for another network, an output
folder that is read-only, full or in use, a run that diverged. A script ends on one with a
single line on stderr and `USER_ERROR_STATUS` (see `utils.runtime.run`); any other exception
is a bug and keeps its traceback.

Each module's own error derives from `UserError` and from the built-in type that fits it
(ValueError for contents, OSError for the file system), so that code catching the built-in
type keeps working.
"""
from __future__ import annotations

USER_ERROR_STATUS = 2


class UserError(Exception):
    """A failure the user can fix; its message is one line naming what they gave."""


class UsageError(UserError, ValueError):
    """Options that cannot be used together, or not on this machine."""


class OutputError(UserError, OSError):
    """An output location that cannot take the files: read-only, full, in use or not a folder."""


class TrainingDiverged(UserError, FloatingPointError):
    """A run whose loss or parameters became non-finite."""


class DataError(UserError, ValueError):
    """A data file or folder that cannot be used; the message names it."""
