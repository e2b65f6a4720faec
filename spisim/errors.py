"""Errors a user can cause. The `spi` command prints them as one line and exits non-zero."""


class SpiError(Exception):
    """Bad input from the user (file, option, manifest, geometry): message is shown as is."""


class InputFileError(SpiError):
    """A file is missing, unreadable or corrupt."""


class ConfigError(SpiError):
    """A manifest, config or option has an unknown key, a missing or an impossible value."""


class OutputFileError(SpiError):
    """An output file or folder cannot be written (read-only file system, no permission, disk full)."""


def os_error_message(exc: OSError, what: str = "") -> str:
    """One line for an :class:`OSError`: ``what`` (or the file name) and the system's reason.

    h5py reports file-system errors as ``OSError`` with a long text holding ``error message = '...'``;
    that reason is extracted so that the line stays short.
    """
    import re

    name = what or (str(exc.filename) if exc.filename else "")
    reason = exc.strerror
    if not reason:
        text = str(exc)
        m = re.search(r"error message = '([^']+)'", text)
        reason = m.group(1) if m else (text.strip().splitlines() or [type(exc).__name__])[0]
    return f"{name}: {reason}" if name else reason


def format_warning_line(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                        line: str | None = None) -> str:
    """A warning as one line ``warning: MESSAGE`` (for :data:`warnings.formatwarning` in commands)."""
    return f"warning: {message}\n"


def one_line_warnings() -> None:
    """Show warnings as ``warning: MESSAGE`` lines, without the source line (the filters stay as they are)."""
    import warnings

    warnings.formatwarning = format_warning_line  # type: ignore[assignment]
