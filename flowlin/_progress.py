"""Progress bars over long work: shown on a terminal, silent otherwise or when asked."""

import contextlib
import sys

from tqdm.auto import tqdm


@contextlib.contextmanager
def progress_bar(
    *, total: int, initial: int = 0, enabled: bool = True, unit: str = "it", desc: str | None = None
):
    """A tqdm bar with ETA; off when `enabled` is False or output is neither a terminal nor a
    notebook (so logs and CI stay clean)."""
    show = enabled and (sys.stderr.isatty() or "ipykernel" in sys.modules)
    with tqdm(
        total=total,
        initial=initial,
        disable=not show,
        unit=unit,
        desc=desc,
        dynamic_ncols=True,
        leave=False,
    ) as bar:
        yield bar
