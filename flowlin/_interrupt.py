"""Ctrl-C that is never lost, for the command line.

Python runs a SIGINT handler at the next bytecode of the main thread, and that can be inside a
garbage-collection callback (JAX registers one). A `KeyboardInterrupt` raised there is printed
as "Exception ignored in: <function _xla_gc_callback ...>" and dropped: the command would run
on to the end as if never interrupted (seen in `tests/test_interrupt.py` on a loaded machine).

`catch_interrupts()` (the CLI's `main`) installs a handler that records the interrupt before
raising it; `raise_if_interrupted()` raises it again where nothing swallows it: before each
sweep chunk is launched, after each `flowlin reproduce` target, and when a resumable sweep
block ends (`flowlin.reproduce._report.resumable`). Finished chunks are saved either way. In
library use (a notebook) no handler is installed and `raise_if_interrupted()` does nothing.
"""

import contextlib
import signal
import threading


_INTERRUPTED = threading.Event()


def _record_and_raise(signum, frame):
    _INTERRUPTED.set()
    raise KeyboardInterrupt


@contextlib.contextmanager
def catch_interrupts():
    """Within the block, SIGINT is recorded as well as raised (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _INTERRUPTED.clear()
    previous = signal.signal(signal.SIGINT, _record_and_raise)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        _INTERRUPTED.clear()


def raise_if_interrupted() -> None:
    """Raise `KeyboardInterrupt` if a Ctrl-C was recorded (and possibly swallowed) before."""
    if _INTERRUPTED.is_set():
        raise KeyboardInterrupt
