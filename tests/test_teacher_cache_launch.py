"""Teacher caches under real launches: a 2-process build (torchrun) and a build killed with SIGKILL then rerun are
byte-identical to a 1-process build; cross-rank candidates of 2 gloo ranks are scored from the cached vectors within
the storage rounding; 5 LEAD steps on 2 processes (accelerate launch) from the cache track 5 live steps within the
bound of tests/cache_bounds.py, for a DE and a cross-encoder teacher. Every launch asserts its world size."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import test_train_loop_helpers as helpers
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from cache_bounds import de_score_bound, lead_term_bounds
from test_teacher_cache import config_dict

from lead_dist.config import config_from_dict
from lead_dist.data import collate_for
from lead_dist.data.stream import TrainStream
from lead_dist.teacher_cache.build import PAUSE_ENV

pytestmark = pytest.mark.multiprocess
SHARD_SIZE = 16  # 208 entries: 13 shards, so a kill lands between shards and 2 ranks take several each
TIMEOUT_S = 300


def cache_command(launcher: str, config: Path, out: Path) -> list[str]:
    verb = ["-m", "lead_dist.cli", "cache-teacher", str(config), "--out", str(out), "--shard-size", str(SHARD_SIZE)]
    if launcher == "single":
        return [sys.executable, *verb]
    return [str(helpers.BIN / "torchrun"), "--nproc_per_node", "2", "--master_port", str(helpers.free_port()), *verb]


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def de_yaml(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cache_launch")
    config = config_dict(helpers.shared_shards(tmp_path_factory), root / "run", "de")
    return helpers.write_config(root / "de.yaml", config)


@pytest.fixture(scope="module")
def reference_cache(de_yaml) -> Path:
    out = de_yaml.parent / "reference"
    result = subprocess.run(cache_command("single", de_yaml, out), env=helpers.base_env(), capture_output=True,
                            text=True, timeout=TIMEOUT_S, cwd=helpers.REPO)  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    assert json.loads(result.stdout.splitlines()[-1])["world_size"] == 1
    return out


def test_two_process_build_is_byte_identical_to_one_process(de_yaml, reference_cache):
    out = de_yaml.parent / "two"
    result = subprocess.run(cache_command("torchrun", de_yaml, out), env=helpers.base_env(), capture_output=True,
                            text=True, timeout=TIMEOUT_S, cwd=helpers.REPO)  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    summaries = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert sorted((s["rank"], s["world_size"]) for s in summaries) == [(0, 2), (1, 2)]
    assert all(s["shards"] > 0 for s in summaries)  # both ranks encoded a share
    # The same shards in the same batches with the same kernels (1 thread each): the same bytes.
    assert folder_bytes(out) == folder_bytes(reference_cache)


def test_kill_9_during_the_build_then_rerun_is_byte_identical(de_yaml, reference_cache):
    out = de_yaml.parent / "killed"
    process = subprocess.Popen(cache_command("single", de_yaml, out), env=helpers.base_env(**{PAUSE_ENV: "1.0"}),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=helpers.REPO,
                               start_new_session=True)  # fmt: skip
    helpers.wait_for(lambda: len(list(out.glob("*.safetensors"))) >= 2, process, what="two cache shards")
    helpers.kill_tree(process)
    written = len(list(out.glob("*.safetensors")))
    assert not (out / "manifest.json").exists() and (out / "building.json").exists() and written < 13
    result = subprocess.run(cache_command("single", de_yaml, out), env=helpers.base_env(), capture_output=True,
                            text=True, timeout=TIMEOUT_S, cwd=helpers.REPO)  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    assert json.loads(result.stdout.splitlines()[-1])["skipped"] == written  # resumed, not redone
    assert folder_bytes(out) == folder_bytes(reference_cache)


# --- cross-rank candidates of 2 gloo ranks ----------------------------------------------------------------------------


def _score_worker(rank: int, init_file: str, yaml_path: str, cache: str, out_dir: str) -> None:
    from lead_dist.config import load_config
    from lead_dist.models.from_config import build_teacher
    from lead_dist.teacher_cache.read import CachedTeacher
    from lead_dist.train.objective import score_bi_encoder

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    config = load_config(yaml_path, [f"teacher.cache={cache}", "teacher.trained=false"])
    stream = TrainStream(config.data.train, batch_size=4, num_negatives=3, seed=config.seed, rank=rank, world_size=2)
    examples = next(iter(stream))
    live, cached = build_teacher(config).eval(), CachedTeacher.open(config)
    tokens = collate_for(live, examples, config.data.query_max_length, config.data.passage_max_length)
    with torch.no_grad():
        want = score_bi_encoder(live, tokens, (0, 2), "global")
        got = score_bi_encoder(cached, cached.collate(examples), (0, 2), "global")
        q, p = live(**tokens["queries"], layers=(0, 2)), live(**tokens["passages"], layers=(0, 2))
        p_all = [torch.empty_like(p.final) for _ in range(2)]
        dist.all_gather(p_all, p.final.contiguous())
        layers_all = [torch.empty_like(p.layers) for _ in range(2)]
        dist.all_gather(layers_all, p.layers.contiguous())
    torch.save({"world": dist.get_world_size(), "want": want[:2], "got": got[:2], "q": q, "p_final": torch.cat(p_all),
                "p_layers": torch.cat(layers_all, dim=1)}, Path(out_dir) / f"rank{rank}.pt")  # fmt: skip
    dist.barrier()
    dist.destroy_process_group()
    os._exit(0)


def test_cross_rank_candidates_are_scored_from_the_cached_vectors(tmp_path, de_yaml, reference_cache):
    context = mp.start_processes(_score_worker, nprocs=2, join=False, start_method="spawn",
                                 args=(str(tmp_path / "rendezvous"), str(de_yaml), str(reference_cache), str(tmp_path)))  # fmt: skip
    deadline = time.monotonic() + TIMEOUT_S
    while not context.join(timeout=1):
        assert time.monotonic() < deadline, "2-rank scoring did not finish"
    from rounding import assert_within

    for rank in range(2):
        result = torch.load(tmp_path / f"rank{rank}.pt", weights_only=False)
        assert result["world"] == 2
        (want_final, want_layers), (got_final, got_layers), q = result["want"], result["got"], result["q"]
        assert want_final.shape == got_final.shape == (4, 2 * 4 * 4)  # 4 queries x both ranks' 16 passages
        assert_within(got_final, want_final, de_score_bound(q.final, result["p_final"], q.scale, "fp16"), "final")
        for k in range(2):
            bound = de_score_bound(q.layers[k], result["p_layers"][k], q.scale, "fp16")
            assert_within(got_layers[k], want_layers[k], bound, f"layer {k}")


# --- 5 LEAD steps on 2 processes: cached against live ---------------------------------------------------------------


def step_bounds(config, records: list[dict]) -> list[dict[str, float]]:
    """The bound of each logged step (tests/cache_bounds.py), on that step's global batch (rank 0's batch then rank 1's:
    1 process on both = 2 ranks, DESIGN "distributed semantics") and its layer pairs, with the initial student."""
    from cache_bounds import value_bound

    from lead_dist.train.candidates import global_labels, group_labels
    from lead_dist.train.objective import distill_loss, score_bi_encoder, score_cross_encoder
    from lead_dist.train.setup import build_models

    models = build_models(config)
    student, teacher = models["student"].eval(), models["teacher"].eval()
    batch, group = config.train.batch_size, 1 + config.data.num_negatives
    streams = [iter(TrainStream(config.data.train, batch_size=batch, num_negatives=config.data.num_negatives,
                                seed=config.seed, rank=r, world_size=2)) for r in range(2)]  # fmt: skip
    lengths = (config.data.query_max_length, config.data.passage_max_length)
    bounds = []
    for record in records:
        examples = next(streams[0]) + next(streams[1])
        layers = (tuple(record["layers"]["student"]), tuple(record["layers"]["teacher"]))
        tokens = {
            "student": collate_for(student, examples, *lengths),
            "teacher": collate_for(teacher, examples, *lengths),
        }
        with torch.no_grad():
            _total, terms = distill_loss(student, teacher, tokens, *layers, config.lead, teacher_trained=False,
                                         candidates=config.candidates)  # fmt: skip
            s_scores = score_bi_encoder(student, tokens["student"], layers[0], config.candidates)[:2]
            if teacher.kind == "ce":
                t_scores = score_cross_encoder(teacher, tokens["teacher"], layers[1], group)
                e = tuple(value_bound(t.unsqueeze(-1), "fp16").squeeze(-1) for t in t_scores)
                labels = group_labels(len(examples), "cpu")
            else:
                t_scores = score_bi_encoder(teacher, tokens["teacher"], layers[1], config.candidates)[:2]
                q = teacher(**tokens["teacher"]["queries"], layers=layers[1])
                p = teacher(**tokens["teacher"]["passages"], layers=layers[1])
                per_layer = [de_score_bound(q.layers[k], p.layers[k], q.scale, "fp16") for k in range(len(layers[1]))]
                e = (de_score_bound(q.final, p.final, q.scale, "fp16"), torch.stack(per_layer))
                labels = global_labels(len(examples), group, "cpu")
        bounds.append(lead_term_bounds(terms, t_scores, s_scores, e, labels, config.lead))
    return bounds


@pytest.mark.parametrize("kind", ["de", "ce"])
def test_five_steps_on_two_processes_from_the_cache_track_the_live_teacher(tmp_path, tmp_path_factory, kind):
    shards = helpers.shared_shards(tmp_path_factory)
    live_config = config_dict(shards, tmp_path / "live", kind, train={"max_steps": 5})
    live_yaml = helpers.write_config(tmp_path / "live.yaml", live_config)
    result = subprocess.run(cache_command("single", live_yaml, tmp_path / "cache"), env=helpers.base_env(),
                            capture_output=True, text=True, timeout=TIMEOUT_S, cwd=helpers.REPO)  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    cached_config = config_dict(shards, tmp_path / "cached", kind, train={"max_steps": 5},
                                teacher={"cache": str(tmp_path / "cache")})  # fmt: skip
    cached_yaml = helpers.write_config(tmp_path / "cached.yaml", cached_config)
    helpers.launch("accelerate", live_yaml)
    helpers.launch("accelerate", cached_yaml)
    for run in ("live", "cached"):
        assert helpers.run_info(tmp_path / run)["world_size"] == 2
    assert helpers.run_info(tmp_path / "cached")["engines"]["teacher"] == "CachedTeacher"  # never built
    live, cached = helpers.step_records(tmp_path / "live"), helpers.step_records(tmp_path / "cached")
    assert len(live) == len(cached) == 5
    pairs = [(r["layers"]["student"], r["layers"]["teacher"]) for r in live]
    assert pairs == [(r["layers"]["student"], r["layers"]["teacher"]) for r in cached]
    assert cached[0]["loss"]["student"] == live[0]["loss"]["student"]  # the same student, no teacher in it
    # Later steps: the two students differ by the steps their (bounded) target differences caused; the margin of 2
    # covers the change of M and of the KLs this brings to the bound (an Adam step moves a weight by <= lr).
    for step, bound in enumerate(step_bounds(config_from_dict(live_config), live)):
        for name, limit in bound.items():
            if name.startswith("layer_weights/"):
                k = int(name.split("/")[1])
                got, want = cached[step]["layers"]["weights"][k], live[step]["layers"]["weights"][k]
            elif name != "student":
                got, want = cached[step]["loss"][name], live[step]["loss"][name]
            else:
                continue
            assert abs(got - want) <= 2 * limit, (step, name, got, want, limit)
