"""The errors a verb turns into one line on stderr, never a bug: bad input (exit code 2) and a failed run (1).

Raise `UsageError` with a message that names the file, flag or config key and what was expected. `lead_dist.cli`
prints it as `lead-dist VERB: error: MESSAGE` (the traceback only under `--debug`). It is a ValueError, so code that
already catches ValueError for bad input keeps working.

Raise `RunFailed` when the input was fine but the run's result must not be used (a training run whose losses went
non-finite): the same one line, exit code 1.
"""

from __future__ import annotations


class UsageError(ValueError):
    """Bad input or a refused request (a used folder, a locked folder, an input the output would overwrite)."""


class RunFailed(RuntimeError):
    """A run that started and failed on the way (no result to use): one line, exit code 1."""
