"""The one exception type that reaches the user as a single line (see bench/__main__.py)."""


class BenchError(Exception):
    """A problem the user can fix: bad config value, missing file, unsupported layer, ...

    The message is printed as one line, without traceback, and the process exits with status 2.
    It should say what happened and what to do.
    """
