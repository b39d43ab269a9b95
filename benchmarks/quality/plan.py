"""The quality benchmark's plan: configs/scifact/bench/grid.yaml read, checked and turned into typed records.

The plan is the one place where the benchmark departs from the committed recipes, so this module is strict about
it: every key is checked, an override may only touch the keys in ALLOWED_OVERRIDES (data and step sizes, precision,
checkpointing, never a learning rate or a loss), and every recipe a run names must exist. Errors name the file and
the key, and say what was expected.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

# What a grid may change in a recipe. Paths (data.train, data.dev, output_dir, teacher.path, student.path) and the
# seed are set by the script itself (see quality.py).
ALLOWED_OVERRIDES = frozenset(
    {
        "train.max_steps",
        "train.batch_size",
        "train.mixed_precision",
        "train.save_every",
        "train.log_every",
        "train.eval_every",
        "data.passage_max_length",
        "data.query_max_length",
    }
)
TEACHER_KINDS = ("de", "cb", "ce")
EVALUATE_KEYS = ("query_max_length", "passage_max_length", "dtype", "batch_size", "top_k")
# How the CB and CE teachers are evaluated: `lead-dist rerank` of the DE teacher's top `depth` (neither kind is a
# single-vector retriever that `lead-dist evaluate` can search a corpus with).
RERANK_KEYS = ("depth", "query_max_length", "passage_max_length", "dtype", "batch_size")
DEV_SPLIT_KEYS = ("queries", "corpus_size", "seed")
PROBE_KEYS = ("batches", "dev_batches", "chosen_scoring")


class PlanError(ValueError):
    """A problem in the grid file, naming the file and the key."""


@dataclass(frozen=True)
class Dataset:
    data: Path  # BEIR folder
    split: str


# Where a student run starts: the one warmed student (MiniLM's first 3 layers), or the warmed DE teacher (all six
# layers of MiniLM, warmed to its dev plateau: the 6-layer student of a deeper teacher).
STUDENT_STARTS = ("student_warmup", "teacher_de")


@dataclass(frozen=True)
class RunSpec:
    name: str
    config: Path  # the committed recipe
    teacher: str  # de | cb | ce, or a packaged teacher's name
    seeds: tuple[int, ...]
    group: str
    zero_shot: bool  # also evaluated zero-shot on the grid's zero-shot dataset (when the grid has one)
    student: str = "student_warmup"  # STUDENT_STARTS


@dataclass(frozen=True)
class PackagedTeacher:
    """A teacher used as published (frozen, served from a per-layer cache), warmed up on SciFact train only if, zero-
    shot, it does not beat the warmed student on dev (`packaged_teachers` in the grid file)."""

    name: str
    model: str  # a model folder or a packaged hub id (lead_dist/models/packaged.py)
    warmup: Path  # the warm-up recipe, used only when the zero-shot teacher does not beat the warmed student on dev


@dataclass(frozen=True)
class Regime:
    """One teacher/student pair of the verdict (results `regimes`): response KD against LEAD from the same start."""

    name: str
    teacher: str  # the key of the teacher whose test nDCG@10 is reported (a `teachers` kind or a packaged teacher)
    teacher_label: str
    student_label: str
    response: str  # run names
    lead: str


@dataclass
class DevSplit:
    queries: Path  # the committed list of dev query ids
    corpus_size: int  # passages of the fixed dev corpus the in-training curves use
    seed: int


@dataclass
class Plan:
    grid: str
    source: Path
    train: Dataset
    test: Dataset
    zero_shot: Dataset | None
    dev_split: DevSplit
    mining_top_k: int
    mining_depth: str
    evaluate: dict[str, Any]
    rerank: dict[str, Any]
    probe: dict[str, Any]
    teachers: dict[str, Path]  # kind -> warm-up recipe
    packaged_teachers: dict[str, PackagedTeacher]
    student_warmup: Path
    ce_must_beat_de_on_dev: bool
    runs: list[RunSpec]
    seeds: tuple[int, ...]
    evaluate_packaged: bool
    warmup_overrides: dict[str, Any]
    student_warmup_overrides: dict[str, Any]
    distill_overrides: dict[str, Any]
    regimes: list[Regime] = field(default_factory=list)


def _section(raw: Any, key: str, source: Path) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise PlanError(f"{source}: {key}: expected a mapping, got {type(raw).__name__}")
    return raw


def _require(mapping: dict[str, Any], key: str, where: str, source: Path) -> Any:
    if key not in mapping:
        raise PlanError(f"{source}: {where}.{key}: missing (expected it in the {where} section)")
    return mapping[key]


def _exact_section(raw: dict[str, Any], key: str, keys: tuple[str, ...], source: Path) -> dict[str, Any]:
    """A required top-level mapping that must hold exactly `keys`."""
    section = _section(_require(raw, key, "top level", source), key, source)
    missing = [k for k in keys if k not in section]
    unknown = [k for k in section if k not in keys]
    if missing or unknown:
        raise PlanError(f"{source}: {key}: expected exactly the keys {', '.join(keys)} "
                        f"(missing: {missing or 'none'}, unknown: {unknown or 'none'})")  # fmt: skip
    return section


def _dataset(raw: Any, key: str, root: Path, source: Path, check_data: bool) -> Dataset:
    section = _section(raw, f"datasets.{key}", source)
    folder = root / str(_require(section, "data", f"datasets.{key}", source))
    split = str(_require(section, "split", f"datasets.{key}", source))
    qrels = folder / "qrels" / f"{split}.tsv"
    if check_data and not qrels.is_file():
        raise PlanError(f"{source}: datasets.{key}: expected a BEIR folder with {qrels.relative_to(folder)}, "
                        f"but {qrels} does not exist")  # fmt: skip
    return Dataset(folder, split)


def _overrides(raw: Any, key: str, source: Path) -> dict[str, Any]:
    section = _section(raw if raw is not None else {}, key, source)
    for name in section:
        if name not in ALLOWED_OVERRIDES:
            raise PlanError(
                f"{source}: {key}.{name}: a grid may only override data/step sizes, precision and checkpointing "
                f"({', '.join(sorted(ALLOWED_OVERRIDES))}); put other changes in a recipe under configs/"
            )
    return dict(section)


def _seeds(raw: Any, key: str, source: Path) -> tuple[int, ...]:
    if not isinstance(raw, list) or not raw or not all(isinstance(s, int) and not isinstance(s, bool) for s in raw):
        raise PlanError(f"{source}: {key}: expected a non-empty list of integer seeds, got {raw!r}")
    if len(set(raw)) != len(raw):
        raise PlanError(f"{source}: {key}: seeds repeat: {raw}")
    return tuple(raw)


def load_plan(path: str | Path, grid: str, root: str | Path, *, check_data: bool = True) -> Plan:
    """Read the grid file and build the plan of grid `grid`; relative paths are taken from `root` (the repo).
    `check_data=False` leaves out the check that the datasets are on disk (the structure of a grid can be checked
    in a clone without the data; running it cannot)."""
    source, root = Path(path), Path(root)
    if not source.is_file():
        raise PlanError(f"grid file {source} does not exist")
    raw = _section(yaml.safe_load(source.read_text()), "the top level", source)
    grids = _section(_require(raw, "grids", "top level", source), "grids", source)
    if grid not in grids:
        raise PlanError(f"{source}: grids.{grid}: no such grid; choose one of {', '.join(grids)}")
    chosen = _section(grids[grid], f"grids.{grid}", source)
    where = f"grids.{grid}"

    datasets = _section(_require(raw, "datasets", "top level", source), "datasets", source)
    zero_shot_wanted = bool(chosen.get("zero_shot", False))
    mining = _section(_require(raw, "mining", "top level", source), "mining", source)
    evaluate = _exact_section(raw, "evaluate", EVALUATE_KEYS, source)
    rerank = _exact_section(raw, "rerank", RERANK_KEYS, source)
    probe = _exact_section(raw, "probe", PROBE_KEYS, source)
    dev = _exact_section(raw, "dev_split", DEV_SPLIT_KEYS, source)
    dev_list = root / str(dev["queries"])
    if not dev_list.is_file():
        raise PlanError(f"{source}: dev_split.queries: {dev_list} does not exist (the committed dev query list)")
    student_warmup = root / str(_require(raw, "student_warmup", "top level", source))
    if not student_warmup.is_file():
        raise PlanError(f"{source}: student_warmup: recipe {student_warmup} does not exist")

    teachers, packaged = _chosen_teachers(raw, chosen, where, root, source)

    seeds = _seeds(_require(chosen, "seeds", where, source), f"{where}.seeds", source)
    all_runs, runs = _chosen_runs(raw, chosen, grid, seeds, [*teachers, *packaged], root, source)

    regimes = _regimes(raw.get("regimes"), {spec.name: spec for spec in runs}, all_runs, source)
    return Plan(
        grid=grid,
        source=source,
        train=_dataset(_require(datasets, "train", "datasets", source), "train", root, source, check_data),
        test=_dataset(_require(datasets, "test", "datasets", source), "test", root, source, check_data),
        zero_shot=(
            _dataset(datasets["zero_shot"], "zero_shot", root, source, check_data) if zero_shot_wanted else None
        ),
        dev_split=DevSplit(dev_list, int(dev["corpus_size"]), int(dev["seed"])),
        mining_top_k=int(_require(mining, "top_k", "mining", source)),
        mining_depth=str(_require(mining, "depth", "mining", source)),
        evaluate=dict(evaluate),
        rerank=dict(rerank),
        probe=dict(probe),
        teachers=teachers,
        packaged_teachers=packaged,
        student_warmup=student_warmup,
        ce_must_beat_de_on_dev=bool(raw.get("ce_must_beat_de_on_dev", True)),
        runs=runs,
        seeds=seeds,
        evaluate_packaged=bool(chosen.get("evaluate_packaged", False)),
        warmup_overrides=_overrides(chosen.get("warmup_overrides"), f"{where}.warmup_overrides", source),
        student_warmup_overrides=_overrides(
            chosen.get("student_warmup_overrides"), f"{where}.student_warmup_overrides", source
        ),
        distill_overrides=_overrides(chosen.get("distill_overrides"), f"{where}.distill_overrides", source),
        regimes=regimes,
    )


def _chosen_teachers(
    raw: dict, chosen: dict, where: str, root: Path, source: Path
) -> tuple[dict[str, Path], dict[str, PackagedTeacher]]:
    """The warm-up recipe of each teacher kind the grid names, and the packaged teachers it names."""
    all_teachers = _section(_require(raw, "teachers", "top level", source), "teachers", source)
    all_packaged = _packaged_teachers(raw.get("packaged_teachers"), root, source)
    wanted_teachers = _require(chosen, "teachers", where, source)
    known = (*TEACHER_KINDS, *all_packaged)
    if not isinstance(wanted_teachers, list) or not set(wanted_teachers) <= set(known):
        raise PlanError(f"{source}: {where}.teachers: expected a list drawn from {known}, got {wanted_teachers!r}")
    if "de" not in wanted_teachers:
        raise PlanError(f"{source}: {where}.teachers: must include de (the DE teacher mines every run's negatives)")
    teachers = {}
    for kind in (k for k in wanted_teachers if k in TEACHER_KINDS):
        recipe = root / str(_require(all_teachers, kind, "teachers", source))
        if not recipe.is_file():
            raise PlanError(f"{source}: teachers.{kind}: recipe {recipe} does not exist")
        teachers[kind] = recipe
    packaged = {name: all_packaged[name] for name in wanted_teachers if name in all_packaged}
    return teachers, packaged


def _chosen_runs(
    raw: dict, chosen: dict, grid: str, seeds: tuple[int, ...], teachers: list[str], root: Path, source: Path
) -> tuple[dict, list[RunSpec]]:
    """Every run the grid names, checked against its teachers (`teachers`: warmed up or packaged, in that order)."""
    where = f"grids.{grid}"
    all_runs = _section(_require(raw, "runs", "top level", source), "runs", source)
    wanted_runs = _require(chosen, "runs", where, source)
    if wanted_runs == "all":
        wanted_runs = list(all_runs)
    if not isinstance(wanted_runs, list) or not wanted_runs:
        raise PlanError(f"{source}: {where}.runs: expected `all` or a list of run names, got {wanted_runs!r}")
    runs = []
    for name in wanted_runs:
        if name not in all_runs:
            raise PlanError(f"{source}: {where}.runs: {name!r} is not defined under runs ({', '.join(all_runs)})")
        spec = _section(all_runs[name], f"runs.{name}", source)
        recipe = root / str(_require(spec, "config", f"runs.{name}", source))
        if not recipe.is_file():
            raise PlanError(f"{source}: runs.{name}.config: recipe {recipe} does not exist")
        teacher = _require(spec, "teacher", f"runs.{name}", source)
        if teacher not in teachers:
            raise PlanError(f"{source}: runs.{name}.teacher: {teacher!r} is not warmed up by grid {grid!r} "
                            f"(its teachers: {', '.join(teachers)}); add it to {where}.teachers or drop the run")  # fmt: skip
        which = _require(spec, "seeds", f"runs.{name}", source)
        if which not in ("all", "first"):
            raise PlanError(f"{source}: runs.{name}.seeds: expected all or first, got {which!r}")
        run_seeds = seeds if which == "all" else seeds[:1]
        zero_shot = _require(spec, "zero_shot", f"runs.{name}", source)
        if not isinstance(zero_shot, bool):
            raise PlanError(f"{source}: runs.{name}.zero_shot: expected true or false, got {zero_shot!r}")
        start = spec.get("student", "student_warmup")
        if start not in STUDENT_STARTS:
            raise PlanError(f"{source}: runs.{name}.student: expected one of {STUDENT_STARTS}, got {start!r}")
        runs.append(RunSpec(name, recipe, teacher, run_seeds, str(spec.get("group", teacher)), zero_shot, start))
    return all_runs, runs


PACKAGED_TEACHER_KEYS = ("model", "warmup")


def _packaged_teachers(raw: Any, root: Path, source: Path) -> dict[str, PackagedTeacher]:
    result = {}
    for name, entry in _section(raw if raw is not None else {}, "packaged_teachers", source).items():
        if name in TEACHER_KINDS:
            raise PlanError(f"{source}: packaged_teachers.{name}: the name of a warmed teacher kind; choose another")
        entry = _section(entry, f"packaged_teachers.{name}", source)
        if sorted(entry) != sorted(PACKAGED_TEACHER_KEYS):
            raise PlanError(f"{source}: packaged_teachers.{name}: expected exactly the keys "
                            f"{', '.join(PACKAGED_TEACHER_KEYS)}, got {', '.join(entry) or 'none'}")  # fmt: skip
        warmup = root / str(entry["warmup"])
        if not warmup.is_file():
            raise PlanError(f"{source}: packaged_teachers.{name}.warmup: recipe {warmup} does not exist")
        result[name] = PackagedTeacher(name, str(entry["model"]), warmup)
    return result


REGIME_KEYS = ("teacher", "teacher_label", "student_label", "response", "lead")


def _regimes(raw: Any, chosen_runs: dict[str, RunSpec], all_runs: dict[str, Any], source: Path) -> list[Regime]:
    """The regimes whose two runs the grid trains (a regime naming an undefined run, or a run of another teacher than
    the regime's, is an error in the file, whichever grid is chosen)."""
    regimes = []
    for name, entry in _section(raw if raw is not None else {}, "regimes", source).items():
        entry = _section(entry, f"regimes.{name}", source)
        missing = [k for k in REGIME_KEYS if k not in entry]
        unknown = [k for k in entry if k not in REGIME_KEYS]
        if missing or unknown:
            raise PlanError(f"{source}: regimes.{name}: expected exactly the keys {', '.join(REGIME_KEYS)} "
                            f"(missing: {missing or 'none'}, unknown: {unknown or 'none'})")  # fmt: skip
        for role in ("response", "lead"):
            run = entry[role]
            if run not in all_runs:
                raise PlanError(f"{source}: regimes.{name}.{role}: {run!r} is not defined under runs")
            if all_runs[run].get("teacher") != entry["teacher"]:
                raise PlanError(f"{source}: regimes.{name}.{role}: run {run!r} has teacher "
                                f"{all_runs[run].get('teacher')!r}, not the regime's {entry['teacher']!r}")  # fmt: skip
        if entry["response"] in chosen_runs and entry["lead"] in chosen_runs:
            regimes.append(Regime(name, **{k: str(entry[k]) for k in REGIME_KEYS}))
    return regimes


def reductions(quick: Plan, full: Plan) -> dict[str, Any]:
    """What a reduced grid leaves out compared with the full one, in words a reader of the JSON can check."""
    full_runs = {(r.name, s) for r in full.runs for s in r.seeds}
    quick_runs = {(r.name, s) for r in quick.runs for s in r.seeds}

    def changed(this: dict[str, Any], theirs: dict[str, Any]) -> dict[str, Any]:
        return {
            key: {"full": theirs.get(key), "this": value} for key, value in this.items() if theirs.get(key) != value
        }

    return {
        "seeds": {"full": list(full.seeds), "this": list(quick.seeds)},
        "teachers_left_out": sorted(set(full.teachers) - set(quick.teachers)),
        "student_runs_left_out": sorted(f"{n}/seed{s}" for n, s in full_runs - quick_runs),
        "distill_overrides_changed": changed(quick.distill_overrides, full.distill_overrides),
        "warmup_overrides_changed": changed(quick.warmup_overrides, full.warmup_overrides),
        "student_warmup_overrides_changed": changed(quick.student_warmup_overrides, full.student_warmup_overrides),
        "zero_shot_left_out": full.zero_shot is not None and quick.zero_shot is None,
        "packaged_baseline_left_out": full.evaluate_packaged and not quick.evaluate_packaged,
        "unchanged": "the test split, its whole corpus and the metric definitions; every hyper-parameter of the "
        "recipes; every override not listed as changed",
    }
