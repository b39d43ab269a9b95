"""The error a verb turns into one line on stderr and exit code 2: bad input or a refused request, never a bug.

Raise `UsageError` with a message that names the file, flag or config key and what was expected. `lead_dist.cli`
prints it as `lead-dist VERB: error: MESSAGE` (the traceback only under `--debug`). It is a ValueError, so code that
already catches ValueError for bad input keeps working.
"""

from __future__ import annotations


class UsageError(ValueError):
    """Bad input or a refused request (a used folder, a locked folder, an input the output would overwrite)."""
