"""Per-seed results adopted from an earlier results JSON of the same grid (`--report-only --adopt FILE`).

Why: the build machine keeps only what is committed, so a grid's run folder does not outlive a sitting, while three
seeds of every arm take more than one. What survives is the committed results JSON: it holds every finished run's
per-seed record (test metrics, per-query nDCG@10, dev curve, steps and times). A later sitting redoes the shared
start (split, mining, the teacher and student warm-ups, the probe), trains only the seeds the file lacks
(`--only-seeds`), and the report takes the other seeds from the file.

That is sound only if the redone start is the same start, since the adopted runs were trained from those weights
on those batches. Each step is deterministic for the same code, thread count and kind of CPU, so the redone start
must reproduce the file's record of it bit for bit: the teachers' dev curves and test metrics, the student
warm-up's dev curve, the packaged model's evaluations, the mining report, the probe and the settings. A seed that
both the folder and the file hold must agree bit for bit too (a reproduced run: the strongest check, and recorded).
Any difference is refused, naming the first key that differs; then every seed must be trained again.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

# What a run's per-seed record must reproduce (times are left out: they depend on the machine's load).
RUN_KEYS = ("scifact", "cranfield", "scifact_per_query_ndcg@10", "dev_curve", "steps")
TEACHER_KEYS = ("recipe", "dev_curve", "dev", "scifact", "cranfield")
STUDENT_WARMUP_KEYS = ("recipe", "dev_curve", "warmup_steps")
WHOLE_KEYS = ("settings", "packaged_minilm", "mining_report", "probe")


class AdoptError(ValueError):
    """The earlier results cannot be adopted: the message names the file and the first key that differs."""


def load_earlier(path: Path) -> dict[str, Any]:
    """The earlier results JSON, checked to be a quality grid's report, with the sha256 of its bytes under
    `_sha256` (so that the report says which version of a committed file it adopted from)."""
    try:
        raw = Path(path).read_bytes()
        earlier = json.loads(raw.decode("utf-8"))
    except (OSError, ValueError) as exc:
        raise AdoptError(f"--adopt {path}: cannot read it as JSON ({exc})") from None
    missing = [key for key in ("grid", "students", "teachers", "student_warmup", *WHOLE_KEYS) if key not in earlier]
    if missing:
        raise AdoptError(f"--adopt {path}: not a quality benchmark results file (no {', '.join(missing)})")
    earlier["_sha256"] = hashlib.sha256(raw).hexdigest()
    return earlier


def adoptable_seeds(earlier: dict[str, Any], plan: Any) -> dict[str, set[int]]:
    """Per run of `plan`, the seeds it plans that `earlier` holds a whole record of (every test set the plan
    evaluates that run on)."""
    found = {}
    for spec in plan.runs:
        records = earlier["students"].get(spec.name, {}).get("seeds", {})
        needed = ["scifact", "scifact_per_query_ndcg@10"] + (["cranfield"] if plan.zero_shot and spec.zero_shot else [])
        seeds = {seed for seed in spec.seeds if all(key in records.get(str(seed), {}) for key in needed)}
        if seeds:
            found[spec.name] = seeds
    return found


def adopted_records(earlier: dict[str, Any], seeds: dict[str, set[int]]) -> dict[str, dict[str, Any]]:
    """The per-seed records of `seeds`, keyed as the report keys them (run name, then the seed as a string)."""
    return {
        name: {str(s): earlier["students"][name]["seeds"][str(s)] for s in wanted} for name, wanted in seeds.items()
    }


def check_adoption(payload: dict[str, Any], earlier: dict[str, Any], source: str) -> dict[str, Any]:
    """Refuse (AdoptError) unless `payload`'s shared start equals `earlier`'s bit for bit, and each seed that this
    folder trained and `earlier` holds equals its record there. Returns the `adopted` record for the JSON."""
    reproduced = {
        name: ({int(seed) for seed in run["seeds"]} - set(run.get("adopted_seeds", [])))
        & {int(seed) for seed in earlier["students"].get(name, {}).get("seeds", {})}
        for name, run in payload["students"].items()
    }
    checked: list[str] = []
    new_keys: list[str] = []
    for key in WHOLE_KEYS:
        _same(payload[key], earlier[key], key, source, new_keys)
        checked.append(key)
    for kind, teacher in earlier["teachers"].items():
        if kind in payload["teachers"]:
            for key in TEACHER_KEYS:
                _same(payload["teachers"][kind].get(key), teacher.get(key), f"teachers.{kind}.{key}", source, new_keys)
            checked.append(f"teachers.{kind}")
    for key in STUDENT_WARMUP_KEYS:
        _same(payload["student_warmup"][key], earlier["student_warmup"][key], f"student_warmup.{key}", source, new_keys)
    checked.append("student_warmup")
    for name, seeds in reproduced.items():
        for seed in sorted(seeds):
            ours, theirs = payload["students"][name]["seeds"][str(seed)], earlier["students"][name]["seeds"][str(seed)]
            for key in RUN_KEYS:
                _same(ours.get(key), theirs.get(key), f"students.{name}.seeds.{seed}.{key}", source, new_keys)
    return {
        "from": source,
        "from_sha256": earlier.get("_sha256"),
        "from_grid": earlier["grid"],
        "from_machine": earlier.get("machine"),
        "seeds_adopted": {
            name: run["adopted_seeds"] for name, run in payload["students"].items() if run.get("adopted_seeds")
        },  # fmt: skip
        "seeds_reproduced": {name: sorted(seeds) for name, seeds in reproduced.items() if seeds},
        "checked_bit_for_bit": checked,
        "new_keys_not_compared": new_keys,
        "note": "each seed listed in seeds_adopted is the earlier file's record (trained in an earlier sitting from "
        "the same start, which this folder reproduced bit for bit in every key of checked_bit_for_bit); "
        "seeds_reproduced were trained again here and equal the earlier records bit for bit",
    }


def _same(ours: Any, theirs: Any, key: str, source: str, new_keys: list[str]) -> None:
    # through JSON, so that tuples and lists compare as the files hold them
    found = _first_difference(json.loads(json.dumps(ours)), json.loads(json.dumps(theirs)), key, new_keys)
    if found is not None:
        where, mine, file_value = found
        raise AdoptError(
            f"--adopt {source}: {where} is {_short(file_value)} there but {_short(mine)} in this folder, so its "
            "runs were not trained from this start (another code, thread count or kind of CPU?). Train every seed "
            "here instead (leave out --adopt)."
        )


def _first_difference(ours: Any, theirs: Any, where: str, new_keys: list[str]) -> tuple[str, Any, Any] | None:
    """(key path, ours, theirs) of the first leaf that differs, or None when equal. A key only this folder has is
    something the earlier code did not record (a report that grew a field): listed in `new_keys`, not compared."""
    if isinstance(ours, dict) and isinstance(theirs, dict):
        new_keys += [f"{where}.{key}" for key in sorted(ours.keys() - theirs.keys())]
        for key in sorted(theirs):
            found = _first_difference(ours.get(key), theirs[key], f"{where}.{key}", new_keys)
            if found is not None:
                return found
        return None
    if isinstance(ours, list) and isinstance(theirs, list) and len(ours) == len(theirs):
        for index, (a, b) in enumerate(zip(ours, theirs, strict=True)):
            found = _first_difference(a, b, f"{where}[{index}]", new_keys)
            if found is not None:
                return found
        return None
    return None if ours == theirs else (where, ours, theirs)


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 80 else text[:77] + "..."
