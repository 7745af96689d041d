"""Progress of long work: a labelled bar with a count and an ETA on a terminal or in a notebook,
one line per step (stage or chunk) when output goes to a log, nothing when asked.

`stage(name)` names what runs inside it (`"fig1: paper widths"`); every `progress_bar` opened
inside carries that name before its own `desc`, so a sweep run by the reproduction says which
figure it belongs to without the sweep knowing about figures.
"""

import contextlib
import contextvars
import importlib.util
import sys
import time


_STAGE: contextvars.ContextVar[str | None] = contextvars.ContextVar("flowlin_stage", default=None)


@contextlib.contextmanager
def stage(name: str):
    """Label every progress bar opened inside with `name` (nested stages join with ": ")."""
    outer = _STAGE.get()
    token = _STAGE.set(f"{outer}: {name}" if outer else name)
    try:
        yield
    finally:
        _STAGE.reset(token)


def _in_notebook() -> bool:
    """Running in a Jupyter kernel (not merely a process that imported ipykernel)."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return type(shell).__name__ == "ZMQInteractiveShell"


def _tqdm():
    """tqdm's widget bar in a notebook that has ipywidgets, its text bar elsewhere (tqdm.auto
    would warn "IProgress not found" in a notebook without ipywidgets, into every output)."""
    if _in_notebook() and importlib.util.find_spec("ipywidgets") is not None:
        from tqdm.notebook import tqdm
    else:
        from tqdm.std import tqdm
    return tqdm


def _interactive(stream) -> bool:
    is_tty = getattr(stream, "isatty", lambda: False)()
    return is_tty or (stream in (sys.stdout, sys.stderr) and _in_notebook())


class LineProgress:
    """A progress 'bar' for logs: one line per `update` with the count, the elapsed time and
    an ETA (the mean time per step so far times the steps left). Internal API."""

    def __init__(self, label: str, total: int, initial: int, unit: str, stream):
        self.label, self.total, self.n, self.unit, self.stream = label, total, initial, unit, stream
        self._initial, self._start = initial, time.perf_counter()
        self._write(f"{self.n}/{self.total} {unit}s")

    def _write(self, text: str) -> None:
        print(f"{self.label}: {text}", file=self.stream, flush=True)

    def update(self, n: int = 1) -> None:
        self.n += n
        elapsed = time.perf_counter() - self._start
        done = self.n - self._initial
        left = max(self.total - self.n, 0)
        eta = f", ETA {elapsed / done * left:.0f} s" if done > 0 and left else ""
        self._write(f"{self.n}/{self.total} {self.unit}s, {elapsed:.1f} s{eta}")


@contextlib.contextmanager
def progress_bar(
    *,
    total: int,
    initial: int = 0,
    enabled: bool = True,
    unit: str = "it",
    desc: str | None = None,
    stream=None,
):
    """Progress over `total` steps, labelled with the current `stage` and `desc`.

    On a terminal or in a notebook: a tqdm bar with the label, the count and an ETA, left on
    screen when done. Otherwise (a log, CI): one line per step on `stream` (default stderr)
    via `LineProgress`. Nothing when `enabled` is False. Yields an object with `update(n)`.
    """
    stream = sys.stderr if stream is None else stream
    label = ": ".join(x for x in (_STAGE.get(), desc) if x) or f"{unit}s"
    if enabled and not _interactive(stream):
        yield LineProgress(label, total, initial, unit, stream)
        return
    with _tqdm()(
        total=total,
        initial=initial,
        disable=not enabled,
        unit=unit,
        desc=label,
        dynamic_ncols=True,
        leave=True,
        file=stream,
    ) as bar:
        yield bar


def say(text: str, *, enabled: bool = True, stream=None) -> None:
    """One line of progress (`"<stage>: text"`) for a step with no count, such as starting a
    cluster; nothing when `enabled` is False."""
    if enabled:
        stream = sys.stderr if stream is None else stream
        label = _STAGE.get()
        print(f"{label}: {text}" if label else text, file=stream, flush=True)


def resumed_label(initial: int, total: int) -> str | None:
    """The label of a bar that starts at `initial` of `total` chunks read back from a store."""
    return f"{initial} of {total} chunks read from the store" if initial else None
