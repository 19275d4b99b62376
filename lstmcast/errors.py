"""Errors the user can fix. Anything else escaping the core is a bug."""


class LstmcastError(Exception):
    """A problem with the user's input or config; the message is one line that says what to do.

    The CLI prints it without a traceback and exits with code 2.
    """
