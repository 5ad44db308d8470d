"""The one exception type the CLI turns into a one-line message and exit code 1."""


class UserError(Exception):
    """Bad input from the user: the message says what is wrong and how to fix it."""
