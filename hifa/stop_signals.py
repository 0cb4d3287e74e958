"""SIGTERM and Ctrl-C during training: finish the step and checkpoint instead of dying mid-step."""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable


def catch_stop_signals(stop: list[int]) -> Callable[[], None]:
    """Until the returned function is called, SIGTERM and a first Ctrl-C append to `stop` (checked between
    steps) instead of acting at once; a second Ctrl-C interrupts at once.

    Only the main thread can handle signals; elsewhere this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def on_interrupt(signum: int, frame: object) -> None:
        stop.append(signum)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        print("\nhifa: finishing this step and saving a checkpoint (Ctrl-C again to stop at once)", file=sys.stderr, flush=True)

    handlers = {signal.SIGTERM: lambda signum, frame: stop.append(signum)}
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # not where the launcher ignores Ctrl-C (nohup, &)
        handlers[signal.SIGINT] = on_interrupt
    previous = {sig: signal.signal(sig, handler) for sig, handler in handlers.items()}

    def restore() -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    return restore
