"""The one exception type that reaches the user as a single line, and the one line every CLI prints."""

import errno
import sys


class BenchError(Exception):
    """A problem the user can fix: bad config value, missing file, unsupported layer, ...

    The message is printed as one line, without traceback, and the process exits with status 2.
    It should say what happened and what to do.
    """


_DISK_ERRORS = (errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT)
_PATH_ERRORS = (errno.EEXIST, errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.ENAMETOOLONG, errno.ELOOP)


def cli_error_line(exc: BaseException) -> str | None:
    """The one line a command-line tool prints for a user error (``BenchError``, or Hydra's / OmegaConf's
    config errors), or None for anything else (a bug: let its traceback show)."""
    if isinstance(exc, BenchError):
        return f"error: {exc}"
    if isinstance(exc, OSError) and exc.errno in _DISK_ERRORS:  # a full disk, a read-only folder: not a bug
        return (f"error: cannot write {exc.filename or 'the output folder'}: {exc.strerror or exc}; what was "
                f"finished is kept — make room or choose a writable folder, then run the same command again")
    if isinstance(exc, OSError) and exc.filename and exc.errno in _PATH_ERRORS:  # e.g. an output "folder" that is a file
        return (f"error: cannot use {exc.filename}: {exc.strerror or exc}; point the setting that names it "
                f"(hydra.run.dir, cache_dir, …) to a folder that can be created there")
    if type(exc).__module__.split(".")[0] in ("hydra", "omegaconf"):
        return f"error: {str(exc).splitlines()[0]}"
    return None


def failure_text(exc: BaseException) -> str:
    """What ``<job>/FAILED`` records: the user error's line, or for a bug its type, message and traceback."""
    import traceback

    return cli_error_line(exc) or f"error: {type(exc).__name__}: {exc}\n\n{traceback.format_exc()}"


def exit_with_cli_error(exc: BaseException) -> int:
    """For a command-line tool's ``except Exception as exc``: print the user error's one line (``cli_error_line``)
    to stderr and return the exit code 2; anything else is a bug and is raised again (its traceback shows)."""
    line = cli_error_line(exc)
    if line is None:
        raise exc
    print(line, file=sys.stderr)
    return 2
