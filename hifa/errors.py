"""Errors that the CLI reports as one clear line instead of a traceback."""


class HifaError(Exception):
    """A user-facing error: bad input, missing file or model, invalid config."""


class ConfigError(HifaError, ValueError):
    """A configuration value is invalid; the message names the key."""

    def __init__(self, key: str, message: str):
        self.key = key
        super().__init__(f"config '{key}': {message}")


def require(condition: bool, key: str, message: str) -> None:
    """Raise ConfigError(key, message) unless condition holds."""
    if not condition:
        raise ConfigError(key, message)
