"""The one exception type for errors a user can fix (bad input, missing checkpoint, ...).

The CLI catches it once and prints its message as a single line on stderr; anything else is a
bug and shows a traceback under ``--debug``.
"""


class MidasError(Exception):
    """A problem the user can fix. The message names the file or option and the problem."""
