"""The exception the CLI turns into a one-line message and exit code 1, and the warning it
prints as one line while the run continues."""

from __future__ import annotations

import warnings


class UserError(ValueError):
    """Bad input from the user: the message says what is wrong and how to fix it.

    A ValueError, so library users can catch it idiomatically.
    """


class SfcRelpWarning(UserWarning):
    """Something a researcher should know (the run continues): printed as one line by the CLI."""


def warn(message: str) -> None:
    """Issue an SfcRelpWarning (the CLI prints it as one `sfc-relp: warning:` line)."""
    warnings.warn(message, SfcRelpWarning, stacklevel=2)
