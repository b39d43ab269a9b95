"""Whose is `output_dir`? Claimed by the main process before any model is built, for the whole run.

- A run takes the folder's lock (`lead_dist.lockfile`, host + pid): a second training into the same folder is
  refused while the first runs, and the lock of a killed run (kill -9) is found stale and taken over.
- A folder that already holds something (a finished or killed run, or any other file) is refused without
  `--resume`: a fresh run would truncate its log, overwrite its export and, through `keep_last`, prune its own new
  checkpoints in favour of the old ones. `--overwrite` deletes what is there first (the user asked for it), but
  only in a folder an earlier `train` wrote (it carries the `lead_dist.guard` marker of kind train): a data,
  embeddings or model folder given as output_dir by mistake is refused, never emptied. A folder claimed fresh (or
  emptied) gets that marker. (That output_dir is apart from every input the config names is checked earlier, on
  every rank, by `preflight.check_inputs`.)
  `--resume` and `--overwrite` together are refused: one continues the run, the other deletes it.
- `--resume latest` into a folder with no complete checkpoint starts fresh and says so.

Every rank learns the main process's verdict (one all-gather), so a refusal ends every rank with the same message.
"""

from __future__ import annotations

import sys
from pathlib import Path

from lead_dist.errors import UsageError
from lead_dist.folder_claim import clear_folder, lock_folder, on_main
from lead_dist.guard import check_deletable, folder_entries, mark_folder
from lead_dist.lockfile import FolderLock


def _claim_on_main(out: Path, resume: str | None, overwrite: bool) -> FolderLock:
    if resume and overwrite:
        raise UsageError("--resume and --overwrite contradict each other: one continues the run, the other deletes it")
    lock = lock_folder(out, f"lead-dist train (output_dir {out})")
    try:
        entries = folder_entries(out)
        if entries and not resume:
            if not overwrite:
                shown = ", ".join(p.name for p in entries[:5]) + (", ..." if len(entries) > 5 else "")
                raise UsageError(
                    f"output_dir {out} is not empty ({shown}): continue that run with --resume latest, "
                    "start over with --overwrite (deletes it), or choose another output_dir"
                )
            check_deletable(out, "train", flag="output_dir")
            clear_folder(out)
            print(f"lead-dist train: --overwrite: deleted the {len(entries)} entries of {out}", file=sys.stderr)
            entries = []
        if not entries:
            mark_folder(out, "train")
    except BaseException:
        lock.release()
        raise
    return lock


def claim_output_dir(out: str | Path, *, resume: str | None, overwrite: bool, is_main: bool) -> FolderLock | None:
    """Call on every rank once the process group is up. Returns the lock on the main process (release it at the
    end; it is also released at exit), None elsewhere; raises UsageError on every rank when the main refuses."""
    return on_main(is_main, lambda: _claim_on_main(Path(out), resume, overwrite))
