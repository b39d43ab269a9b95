"""Teacher caches in one process: cached outputs and LEAD losses against the live frozen teacher (bounds derived in
tests/cache_bounds.py), the refusals (one line, exit code 2), the size limit and the folder rules. The 2-process
launches and the kill -9 are in test_teacher_cache_launch.py."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import test_train_loop_helpers as helpers
import torch
from cache_bounds import cb_score_bound, de_score_bound, lead_term_bounds, value_bound
from rounding import assert_within
from test_train_loop_helpers import fresh_accelerate_state  # noqa: F401 (a fixture, used by name)

from lead_dist.cli import main
from lead_dist.config import config_from_dict
from lead_dist.data import collate_for
from lead_dist.data.stream import TrainStream
from lead_dist.models.from_config import build_teacher
from lead_dist.teacher_cache.build import build_cache
from lead_dist.teacher_cache.read import CachedTeacher
from lead_dist.train.candidates import global_labels, group_labels
from lead_dist.train.objective import distill_loss, score_bi_encoder, score_cross_encoder
from lead_dist.train.setup import build_models

LAYERS = ((0, 1), (0, 2))  # student, teacher layer pairs (K = 2)


pytestmark = pytest.mark.usefixtures("fresh_accelerate_state")


def teacher_section(kind: str, **extra) -> dict:
    section = {"trained": False, "kind": kind, "pooling": "mean" if kind == "de" else None, **extra}
    return section | ({"projection_dim": 16} if kind == "cb" else {})


CE_HEAD_SCALE = 30.0  # a fresh head scores every pair about alike (KL ~1e-8); scaled, the scores spread over ~4


def ce_teacher_folder(shards: Path) -> Path:
    """A saved tiny cross-encoder teacher whose head is scaled, so its distributions (and LEAD's terms) are not flat;
    made once beside the shared shards."""
    folder = shards.parent / "ce_teacher"
    if not folder.is_dir():
        raw = helpers.tiny_config(shards, shards.parent / "unused", helpers.minilm_tokenizer(),
                                  teacher=teacher_section("ce"))  # fmt: skip
        teacher = build_teacher(config_from_dict(raw))
        with torch.no_grad():
            teacher.head.weight.mul_(CE_HEAD_SCALE)
        teacher.save(folder)
    return folder


def config_dict(shards: Path, out: Path, kind: str = "de", **sections) -> dict:
    teacher = teacher_section(kind, **sections.pop("teacher", {}))
    if kind == "ce" and "path" not in teacher:
        teacher |= {"path": str(ce_teacher_folder(shards)), "config": None, "tokenizer": None}
    return helpers.tiny_config(shards, out, helpers.minilm_tokenizer(), teacher=teacher, **sections)


_BUILT: dict[tuple[str, str], Path] = {}
# A DE teacher scored as the SciFact recipes score it: the final vector by cosine x 20, the intermediate blocks by raw
# dot products (scale 1), the last block as the final vector: per-layer scales (1, 1, 20) that the cache must keep.
LAYER_OPTIONS = {"similarity": "cos", "scale": 20.0, "layer_similarity": "dot", "layer_scale": 1.0}


def split_kind(kind: str) -> tuple[str, dict]:
    """The model kind and teacher options of a test kind: "de+layers" is a DE with LAYER_OPTIONS."""
    return ("de", LAYER_OPTIONS) if kind == "de+layers" else (kind, {})


def built_cache(tmp_path_factory, kind: str, dtype: str = "fp16") -> Path:
    """One cache per teacher kind and dtype for the module (shard size 64: several shards per family)."""
    if (kind, dtype) not in _BUILT:
        out = tmp_path_factory.mktemp(f"cache_{kind}_{dtype}") / "cache"
        model_kind, options = split_kind(kind)
        shards = helpers.shared_shards(tmp_path_factory)
        config = config_from_dict(config_dict(shards, out.parent / "run", model_kind, teacher=options))
        build_cache(config, out, dtype=dtype, shard_size=64, log=lambda _line: None)
        _BUILT[kind, dtype] = out
    return _BUILT[kind, dtype]


def first_examples(config) -> list[dict]:
    stream = TrainStream(config.data.train, batch_size=4, num_negatives=config.data.num_negatives, seed=config.seed)
    return next(iter(stream))


@pytest.mark.parametrize(
    ("kind", "dtype"), [("de", "fp16"), ("ce", "fp16"), ("cb", "fp16"), ("de", "bf16"), ("de+layers", "fp16")]
)
def test_cached_outputs_equal_the_live_teacher_within_storage_rounding(tmp_path, tmp_path_factory, kind, dtype):
    shards = helpers.shared_shards(tmp_path_factory)
    cache = built_cache(tmp_path_factory, kind, dtype)
    kind, options = split_kind(kind)
    config = config_from_dict(config_dict(shards, tmp_path / "run", kind, teacher={"cache": str(cache), **options}))
    live, cached = build_teacher(config).eval(), CachedTeacher.open(config)
    assert cached.num_layers == live.num_layers == 3 and cached.kind == kind
    examples = first_examples(config)
    tokens = collate_for(live, examples, config.data.query_max_length, config.data.passage_max_length)
    rows = cached.collate(examples)
    every = tuple(range(3))
    with torch.no_grad():
        for part in tokens:  # queries + passages, or pairs
            want, got = live(**tokens[part], layers=every), cached(**rows[part], layers=every)
            if kind == "ce":
                for w, g in zip(want, got, strict=True):
                    assert_within(g, w, value_bound(w.unsqueeze(-1), dtype).squeeze(-1), f"ce {part}")
                continue
            if kind == "cb":  # tokens that count: the same mask, the same values; padding is zero in the cache
                assert torch.equal(got.mask, want.mask[:, : got.mask.shape[1]])
                keep = want.mask[:, : got.mask.shape[1], None].bool()
                want_final, want_layers = want.final[:, : keep.shape[1]], want.layers[:, :, : keep.shape[1]]
                assert_within(got.final, want_final * keep, value_bound(want_final, dtype) * keep, f"cb {part}")
                assert_within(got.layers, want_layers * keep, value_bound(want_layers, dtype) * keep, f"cb {part}")
                continue
            assert (got.scale, got.layer_scales) == (want.scale, want.layer_scales)
            if options:
                assert want.layer_scales == (1.0, 1.0, 20.0)
            assert_within(got.final, want.final, value_bound(want.final, dtype), f"de {part} final")
            assert_within(got.layers, want.layers, value_bound(want.layers, dtype), f"de {part} layers")


def test_the_throughput_benchmarks_in_memory_cache_reads_as_the_built_cache(tmp_path, tmp_path_factory):
    """benchmarks/throughput/cached.py times a cache built in memory by the cache's own code: the teacher it records
    is the built cache's manifest record (per-layer scales included), and its outputs are the live teacher's within
    fp16 storage rounding (the record was once copied there by hand and fell behind the cache format)."""
    from benchmarks.throughput.cached import in_memory_cache
    from lead_dist.teacher_cache.format import read_manifest

    shards = helpers.shared_shards(tmp_path_factory)
    cache = built_cache(tmp_path_factory, "de+layers")
    config = config_from_dict(
        config_dict(shards, tmp_path / "run", "de", teacher={"cache": str(cache), **LAYER_OPTIONS})
    )
    live, examples = build_teacher(config).eval(), first_examples(config)
    memory = in_memory_cache(live, examples, (config.data.query_max_length, config.data.passage_max_length))
    recorded = read_manifest(cache)["teacher"]
    assert recorded["layer_scales"] == [1.0, 1.0, 20.0]
    assert (memory.kind, memory.num_layers, memory.hidden_size) == (recorded["kind"], 3, recorded["hidden_size"])
    assert (memory.scale, memory.layer_scales) == (recorded["scale"], recorded["layer_scales"])
    tokens = collate_for(live, examples, config.data.query_max_length, config.data.passage_max_length)
    rows = memory.collate(examples)
    with torch.no_grad():
        for part in tokens:
            want, got = live(**tokens[part], layers=(0, 1, 2)), memory(**rows[part], layers=(0, 1, 2))
            assert_within(got.final, want.final, value_bound(want.final, "fp16"), f"in-memory {part} final")
            assert_within(got.layers, want.layers, value_bound(want.layers, "fp16"), f"in-memory {part} layers")


@pytest.mark.parametrize("kind", ["de", "ce", "cb"])
def test_lead_loss_and_terms_from_the_cache_equal_the_live_teacher_within_the_bound(tmp_path, tmp_path_factory, kind):
    shards = helpers.shared_shards(tmp_path_factory)
    cache = built_cache(tmp_path_factory, kind)
    config = config_from_dict(config_dict(shards, tmp_path / "run", kind, teacher={"cache": str(cache)}))
    models = build_models(config)
    student, cached, live = models["student"].eval(), models["teacher"], build_teacher(config).eval()
    assert isinstance(cached, CachedTeacher)
    examples = first_examples(config)
    lengths = (config.data.query_max_length, config.data.passage_max_length)
    live_batch = {"student": collate_for(student, examples, *lengths), "teacher": collate_for(live, examples, *lengths)}
    cached_batch = {"student": live_batch["student"], "teacher": cached.collate(examples)}
    candidates = config.candidates

    def loss(teacher, batch):
        with torch.no_grad():
            return distill_loss(student, teacher, batch, *LAYERS, config.lead, teacher_trained=False,
                                candidates=candidates)  # fmt: skip

    def teacher_scores(teacher, batch):
        with torch.no_grad():
            if kind == "ce":
                return score_cross_encoder(teacher, batch["teacher"], LAYERS[1], 1 + config.data.num_negatives)
            return score_bi_encoder(teacher, batch["teacher"], LAYERS[1], candidates)[:2]

    (live_total, live_terms), (cached_total, cached_terms) = loss(live, live_batch), loss(cached, cached_batch)
    want, got = teacher_scores(live, live_batch), teacher_scores(cached, cached_batch)
    if kind == "ce":
        bounds = [value_bound(w.unsqueeze(-1), "fp16").squeeze(-1) for w in want]
    else:
        with torch.no_grad():
            q = live(**live_batch["teacher"]["queries"], layers=LAYERS[1])
            p = live(**live_batch["teacher"]["passages"], layers=LAYERS[1])
    if kind == "cb":
        bounds = list(cb_score_bound(q, p, "fp16"))
    elif kind == "de":
        bounds = [de_score_bound(q.final, p.final, q.scale, "fp16")]
        bounds.append(torch.stack([de_score_bound(q.layers[k], p.layers[k], q.scale, "fp16") for k in range(2)]))
    for w, g, bound in zip(want, got, bounds, strict=True):
        assert_within(g, w, bound, f"{kind} teacher scores")
    with torch.no_grad():
        s_final, s_layers, group = score_bi_encoder(student, live_batch["student"], LAYERS[0], candidates)
    labels = group_labels(4, "cpu") if candidates == "group" else global_labels(4, group, "cpu")
    term_bounds = lead_term_bounds(live_terms, want, (s_final, s_layers), tuple(bounds), labels, config.lead)
    if kind != "cb":
        assert abs(float(cached_total) - float(live_total)) <= term_bounds["total"]
    assert (
        float(live_terms["response_forward"]) > 4 * term_bounds["response_forward"]
    )  # the bound can fail: under a quarter of the term
    assert float(cached_terms["student"]) == float(live_terms["student"])  # no teacher in it: the same computation
    # ColBERT's per-layer scores come from raw token states and run into the hundreds: fp16 moves each by up to ~1,
    # and the worst-case bound of its layer terms (exp(2E/T) with E ~ 3) exceeds the terms themselves, so for CB the
    # per-layer part is checked where it is sharp, on the score matrices above; its response term is bounded here.
    checked = ("response", "response_forward") if kind == "cb" else tuple(term_bounds)
    for name, bound in ((n, b) for n, b in term_bounds.items() if n in checked):
        if name.startswith("layer_weights/"):
            k = int(name.split("/")[1])
            got_w, want_w = cached_terms["layer_weights"][k], live_terms["layer_weights"][k]
            assert abs(float(got_w) - float(want_w)) <= bound, (name, bound)
        elif name not in ("total", "student"):
            assert abs(float(cached_terms[name]) - float(live_terms[name])) <= bound, (name, bound)


def write_yaml(path: Path, config: dict) -> str:
    return str(helpers.write_config(path, config))


def run_cli(capsys, *argv: str) -> tuple[int, str]:
    """Exit code and the verb's own stderr lines (progress bars of model loading left out)."""
    capsys.readouterr()
    code = main(list(argv))
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("lead-dist")]
    return code, "\n".join(lines)


def path_teacher(tmp_path: Path, tmp_path_factory) -> tuple[dict, Path]:
    """A config whose frozen DE teacher is a saved folder (so its weights can be changed on disk), and its cache."""
    shards = helpers.shared_shards(tmp_path_factory)
    folder = tmp_path / "teacher"
    build_teacher(config_from_dict(config_dict(shards, tmp_path / "run", "de"))).save(folder)
    config = config_dict(
        shards, tmp_path / "run", "de", teacher={"path": str(folder), "config": None, "tokenizer": None}
    )
    build_cache(config_from_dict(config), tmp_path / "cache", shard_size=64, log=lambda _line: None)
    config["teacher"]["cache"] = str(tmp_path / "cache")
    return config, folder


def test_refusals_name_the_field_and_exit_2(tmp_path, tmp_path_factory, capsys):
    from safetensors.torch import load_file, save_file

    config, folder = path_teacher(tmp_path, tmp_path_factory)
    yaml_path = write_yaml(tmp_path / "cached.yaml", config)
    code, err = run_cli(capsys, "train", yaml_path, "data.passage_max_length=20")
    assert code == 2 and "'passage_max_length' differs" in err and err.count(chr(10)) == 0, err
    code, err = run_cli(capsys, "train", yaml_path, "teacher.trained=true")
    assert code == 2 and "teacher.cache" in err and "trained" in err and err.count(chr(10)) == 0, err
    weights = load_file(folder / "model.safetensors")
    name = sorted(weights)[0]
    weights[name] = weights[name] + 1e-3
    save_file(weights, folder / "model.safetensors")
    code, err = run_cli(capsys, "train", yaml_path)
    assert code == 2 and "'teacher_weights' differs" in err and err.count(chr(10)) == 0, err
    assert not (tmp_path / "run" / "log.jsonl").exists()  # refused before the first step


def test_a_missing_entry_is_an_error_naming_the_id(tmp_path, tmp_path_factory, capsys):
    from lead_dist.teacher_cache.format import read_shard, write_json, write_shard

    shards = helpers.shared_shards(tmp_path_factory)
    cache = tmp_path / "cache"
    shutil.copytree(built_cache(tmp_path_factory, "de"), cache)
    config = config_dict(shards, tmp_path / "run", "de", teacher={"cache": str(cache)})
    wanted = first_examples(config_from_dict(config))[0]["pos_id"]  # drawn by the very first batch
    manifest = json.loads((cache / "manifest.json").read_text())
    for shard in manifest["shards"]:
        keys, tensors = read_shard(cache / shard["name"])
        if wanted in keys:
            keep = [i for i, key in enumerate(keys) if key != wanted]
            kept = {k: v[keep] for k, v in tensors.items()}
            shard["sha256"] = write_shard(cache / shard["name"], [keys[i] for i in keep], kept)
            shard["count"] -= 1
    write_json(cache / "manifest.json", manifest)
    code, err = run_cli(capsys, "train", write_yaml(tmp_path / "c.yaml", config))
    assert code == 2 and f"no entry for passage id {wanted};" in err and err.count(chr(10)) == 0, err


def test_cache_teacher_refuses_a_trained_teacher_and_a_size_over_the_limit(tmp_path, tmp_path_factory, capsys):
    shards = helpers.shared_shards(tmp_path_factory)
    config = config_dict(shards, tmp_path / "run", "cb")
    yaml_path = write_yaml(tmp_path / "cb.yaml", config)
    code, err = run_cli(capsys, "cache-teacher", yaml_path, "teacher.trained=true", "--out", str(tmp_path / "c"))
    assert code == 2 and "teacher.trained" in err and err.count(chr(10)) == 0, err
    # 48 queries x 16 tokens + 160 passages x <= 24 tokens, x (3 x 48 + 16) values x 2 bytes: about 1 MB
    code, err = run_cli(capsys, "cache-teacher", yaml_path, "--out", str(tmp_path / "c"), "--max-gb", "0.0001")
    assert code == 2 and "above --max-gb 0.0001" in err, err
    assert not (tmp_path / "c").exists()


def test_size_estimate_of_a_colbert_cache_equals_its_stored_values(tmp_path_factory):
    from lead_dist.teacher_cache.build import estimate_bytes
    from lead_dist.teacher_cache.format import read_shard
    from lead_dist.teacher_cache.plan import collect_entries

    cache = built_cache(tmp_path_factory, "cb")
    config = config_from_dict(config_dict(helpers.shared_shards(tmp_path_factory), cache.parent / "run", "cb"))
    teacher = build_teacher(config)
    lengths = (config.data.query_max_length, config.data.passage_max_length)
    estimate = estimate_bytes(teacher, collect_entries(config, "cb"), lengths)
    manifest = json.loads((cache / "manifest.json").read_text())
    tokens = sum(int(read_shard(cache / s["name"])[1]["lengths"].sum()) for s in manifest["shards"])
    # 208 texts, fewer than the 1000 sampled per family: the estimate counts every token exactly, each stored as
    # 3 layers x 48 + 16 projected values of 2 bytes.
    assert estimate == 2 * tokens * (3 * 48 + 16)


def test_folder_rules_finished_cache_kept_foreign_folder_refused(tmp_path, tmp_path_factory, capsys):
    shards = helpers.shared_shards(tmp_path_factory)
    yaml_path = write_yaml(tmp_path / "de.yaml", config_dict(shards, tmp_path / "run", "de"))
    cache = tmp_path / "cache"
    assert run_cli(capsys, "cache-teacher", yaml_path, "--out", str(cache), "--shard-size", "64")[0] == 0
    before = {p.name: p.read_bytes() for p in cache.iterdir()}
    assert run_cli(capsys, "cache-teacher", yaml_path, "--out", str(cache), "--shard-size", "64")[0] == 0
    assert {p.name: p.read_bytes() for p in cache.iterdir()} == before
    code, err = run_cli(capsys, "cache-teacher", yaml_path, "--out", str(cache), "--dtype", "bf16")
    assert code == 2 and "another dtype" in err, err
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    code, err = run_cli(capsys, "cache-teacher", yaml_path, "--out", str(tmp_path / "other"))
    assert code == 2 and "not a teacher cache" in err and (tmp_path / "other" / "notes.txt").read_text() == "mine"


def test_a_student_cut_from_a_cached_teacher_gets_the_teachers_blocks(tmp_path, tmp_path_factory):
    shards = helpers.shared_shards(tmp_path_factory)
    cache = built_cache(tmp_path_factory, "de")
    student = {"config": None, "tokenizer": None, "from_teacher_layers": 2}
    live = build_models(config_from_dict(config_dict(shards, tmp_path / "a", "de", student=student)))
    cached = build_models(config_from_dict(config_dict(shards, tmp_path / "b", "de", student=student,
                                                       teacher={"cache": str(cache)})))  # fmt: skip
    assert isinstance(cached["teacher"], CachedTeacher) and not isinstance(live["teacher"], CachedTeacher)
    want, got = live["student"].state_dict(), cached["student"].state_dict()
    assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want)  # the same copied weights


def test_a_build_into_a_folder_another_live_writer_holds_is_refused(tmp_path, tmp_path_factory, capsys):
    from lead_dist.lockfile import acquire

    shards = helpers.shared_shards(tmp_path_factory)
    yaml_path = write_yaml(tmp_path / "de.yaml", config_dict(shards, tmp_path / "run", "de"))
    cache = tmp_path / "cache"
    held = acquire(cache, "another writer")  # this (live) process holds the folder
    try:
        code, err = run_cli(capsys, "cache-teacher", yaml_path, "--out", str(cache), "--shard-size", "64")
        assert code == 2 and "another writer" in err and len(err.strip().splitlines()) == 1, err
    finally:
        held.release()
    assert run_cli(capsys, "cache-teacher", yaml_path, "--out", str(cache), "--shard-size", "64")[0] == 0
    assert not any(p.name.startswith(".lead_dist.lock") for p in cache.iterdir())  # released at the end


def test_train_with_a_missing_cache_folder_fails_before_any_model_is_built(tmp_path, tmp_path_factory, capsys):
    shards = helpers.shared_shards(tmp_path_factory)
    yaml_path = write_yaml(tmp_path / "de.yaml", config_dict(shards, tmp_path / "run", "de"))
    code, err = run_cli(capsys, "train", yaml_path, f"teacher.cache={tmp_path / 'no-cache'}")
    assert code == 2 and "teacher.cache:" in err and "cache-teacher" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()  # checked before the output_dir was claimed


def _damage(path: Path, how: str) -> None:
    data = bytearray(path.read_bytes())
    if how == "flipped byte":  # the high byte of an fp16 value in the tensors: 0x7f.. is NaN or inf
        data[-2] = 0x7F
    else:  # garbage over every tensor byte (the header stays whole: the file still parses)
        start = 8 + int.from_bytes(data[:8], "little")
        data[start:] = (bytes(range(7, 256, 3)) * len(data))[: len(data) - start]
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("how", ["flipped byte", "garbage"])
def test_a_damaged_cache_shard_is_named_before_any_step(tmp_path, tmp_path_factory, capsys, how):
    """Issue 21: a flipped byte, or 60 KB of garbage, in a shard trained on NaN at most steps and still exported a
    student. Training checks every shard against the manifest's sha256 when it opens the cache."""
    cache = tmp_path / "cache"
    shutil.copytree(built_cache(tmp_path_factory, "de"), cache)
    damaged = cache / "passage-000000.safetensors"
    _damage(damaged, how)
    config = config_dict(helpers.shared_shards(tmp_path_factory), tmp_path / "run", "de", teacher={"cache": str(cache)})
    code, err = run_cli(capsys, "train", write_yaml(tmp_path / "c.yaml", config))
    assert code == 2 and err.count(chr(10)) == 0, err
    assert f"{damaged}: sha256 differs from the one recorded in manifest.json" in err and "cache-teacher" in err, err
    assert not (tmp_path / "run" / "log.jsonl").exists() and not (tmp_path / "run" / "export").exists()


def test_a_resumed_build_encodes_a_kept_shard_again_when_it_was_damaged_meanwhile(
    tmp_path, tmp_path_factory, monkeypatch
):
    """Issue 21: a rerun after a kill kept a shard truncated meanwhile and recorded its sha256. The rerun checks each
    kept shard against the digest written with it, encodes a damaged one again, and the cache equals a clean build."""
    import lead_dist.teacher_cache.build as build

    reference = built_cache(tmp_path_factory, "de")
    config = config_from_dict(config_dict(helpers.shared_shards(tmp_path_factory), tmp_path / "run", "de"))
    out, encoded = tmp_path / "cache", []
    real_encode = build.encode_shard

    def killed_after_two(*args, **kwargs):
        if len(encoded) == 2:
            raise KeyboardInterrupt  # stands for the kill: nothing after the second shard is written
        encoded.append(args[1].name)
        return real_encode(*args, **kwargs)

    monkeypatch.setattr(build, "encode_shard", killed_after_two)
    with pytest.raises(KeyboardInterrupt):
        build_cache(config, out, shard_size=64, log=lambda _line: None)
    monkeypatch.setattr(build, "encode_shard", real_encode)
    assert not (out / "manifest.json").exists()
    assert encoded == ["query-000000.safetensors", "passage-000000.safetensors"]
    truncated = out / "passage-000000.safetensors"
    truncated.write_bytes(truncated.read_bytes()[:-100])

    lines: list[str] = []
    summary = build_cache(config, out, shard_size=64, log=lines.append)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == {p.name: p.read_bytes() for p in reference.iterdir()}
    assert (summary["skipped"], summary["damaged"], summary["shards"]) == (1, 1, 3)
    assert any(line.startswith(f"cache-teacher rank 0: {truncated}: sha256 differs") for line in lines), lines
