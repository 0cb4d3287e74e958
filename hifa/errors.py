"""Errors that the CLI reports as one clear line instead of a traceback."""


class HifaError(Exception):
    """A user-facing error: bad input, missing file or model, invalid config."""


class ConfigError(HifaError, ValueError):
    """A configuration value is invalid; the message names the key."""

    def __init__(self, key: str, message: str):
        # One short line, whatever the input held (a message may echo a pasted or generated value).
        self.key, self.message = clip(printable(str(key)), 120), clip(printable(message), 400)
        super().__init__(f"config '{self.key}': {self.message}")


class OutputError(HifaError, OSError):
    """An output file could not be written (full disk, no permission); the previous file is left as it was.

    Still an OSError with the original errno (e.g. errno.ENOSPC), for callers that catch OSError.
    """

    def __init__(self, message: str, errno: int | None = None):
        super().__init__(message)
        self.errno = errno

    def __str__(self) -> str:
        return str(self.args[0])


class Terminated(BaseException):
    """A termination signal (SIGTERM: SLURM pre-emption, `kill`, `scancel`; or Ctrl-C in `hifa train`) stopped a command.

    A BaseException, like KeyboardInterrupt, so that `except Exception` clean-up code does not swallow it.
    Everything written before it is complete (all outputs are atomic); `hifa train` saves a checkpoint first.
    """

    def __init__(self, message: str = "terminated by SIGTERM", signum: int = 15):
        super().__init__(message)
        self.signum = signum  # the exit status is 128 + signum, as if the signal had killed the process


def printable(text: str) -> str:
    """`text` with control characters (newlines, tabs, ...) written as escapes, so that it stays on one line."""
    return text if text.isprintable() else "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def clip(text: str, limit: int, show=str) -> str:
    """show(text), or show() of its first `limit` characters followed by how long it was."""
    return show(text) if len(text) <= limit else f"{show(text[:limit])}... ({len(text)} characters)"


def require(condition: bool, key: str, message: str) -> None:
    """Raise ConfigError(key, message) unless condition holds."""
    if not condition:
        raise ConfigError(key, message)


def shown(value: object) -> str:
    """A JSON value as an error message shows it: one line, clipped to 60 characters."""
    import json

    return clip(json.dumps(value), 60)


def shorten(text: str, limit: int = 80) -> str:
    """repr() of a user text cut to `limit` characters (error messages stay one short line)."""
    return clip(text, limit, repr)


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether an exception is an allocation failure: torch's (CUDA) OutOfMemoryError, MemoryError, or a
    RuntimeError of the CPU allocator (checked by name and text: this module imports nothing)."""
    if isinstance(exc, MemoryError) or any(cls.__name__ == "OutOfMemoryError" for cls in type(exc).__mro__):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)
