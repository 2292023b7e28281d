"""The errors pyro_gen raises on purpose.

:class:`InputError` (a ``ValueError``) is bad input the library refuses with one line naming the
problem: a flag, a spec string, a data file, a run directory, a setting. The command line turns it
into ``error: ...`` and exit code 2. Any other exception is a defect of the library (or of a
user's own module): the command line reports it as an internal error, writes the traceback to a
file and exits with code 1, so that a crash is never presented as the user's mistake.
"""
from __future__ import annotations

__all__ = ["InputError"]


class InputError(ValueError):
    """Input the library refuses on purpose; ``str(e)`` is one line naming the problem."""
