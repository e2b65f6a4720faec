"""Errors a user can cause. The `spi` command prints them as one line and exits non-zero."""


class SpiError(Exception):
    """Bad input from the user (file, option, manifest, geometry): message is shown as is."""


class InputFileError(SpiError):
    """A file is missing, unreadable or corrupt."""


class ConfigError(SpiError):
    """A manifest, config or option has an unknown key, a missing or an impossible value."""
