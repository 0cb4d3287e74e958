"""A background writer for tracking records: callers queue them and go on; one thread writes them in batches.

With a store shared by many jobs (SQLite under a file lock, or a busy server), a write can wait seconds
for its turn; a training step must not. The thread writes whatever has queued up since its last write as
one batch, so a store that is slow to answer gets fewer, larger writes instead of a backlog.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class BackgroundWriter(Generic[T]):
    """Queue items; a daemon thread hands them to `write` in batches of at most `batch` items, in order."""

    def __init__(self, write: Callable[[list[T]], None], batch: int, name: str = "hifa-tracking"):
        self._write, self._batch = write, batch
        self._pending: list[T] = []
        self._busy = False
        self._closed = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def put(self, items: list[T]) -> None:
        """Queue items for writing; returns at once."""
        with self._cond:
            if self._closed:
                raise RuntimeError("the writer is closed")
            self._pending.extend(items)
            self._cond.notify_all()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every queued item has been handed to `write`; False if `timeout` seconds passed first."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._pending and not self._busy, timeout)

    def close(self, timeout: float | None = None) -> bool:
        """Flush, then let the thread end once the queue is empty; False if the flush timed out (the thread then
        writes on while the process lives, and whatever is left dies with it: it is a daemon)."""
        done = self.flush(timeout)
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if done:
            self._thread.join(timeout)
        return done

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._pending or self._closed)
                if not self._pending:
                    return
                chunk, self._pending = self._pending[: self._batch], self._pending[self._batch :]
                self._busy = True
            try:
                self._write(chunk)  # the caller's write reports its own failures; this thread must survive them
            except Exception:  # noqa: BLE001
                pass
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()
