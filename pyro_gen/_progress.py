"""Progress bars: tqdm on standard error, redrawn at most every 30 s when standard error is not a
terminal (CI logs, files), so logs stay readable."""
from __future__ import annotations

import sys

from tqdm.auto import tqdm

__all__ = ["progress_bar"]


def progress_bar(enabled: bool = True, **kwargs) -> tqdm:
    """A tqdm bar; ``enabled=False`` shows nothing. Other keywords go to :class:`tqdm.tqdm`."""
    interactive = hasattr(sys.stderr, "isatty") and sys.stderr.isatty()
    kwargs.setdefault("mininterval", 0.1 if interactive else 30.0)
    return tqdm(disable=not enabled, **kwargs)
