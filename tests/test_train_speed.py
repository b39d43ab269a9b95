"""The step's speed switches (lead_dist/train/speed.py): defaults per device, refused combinations, the bf16-held
frozen teacher within the bf16 bounds, and compiled blocks == eager blocks in fp32 on CPU."""

from __future__ import annotations

import json
import shutil

import pytest
import test_train_loop_helpers as helpers
import torch
from test_train_loop_helpers import fresh_accelerate_state  # noqa: F401 (a fixture, used by name)

from lead_dist.config import ConfigError, config_from_dict
from lead_dist.train.chunking import Chunking, encode
from lead_dist.train.speed import CompileCounter, apply_to_models, compile_blocks, resolve

pytestmark = pytest.mark.usefixtures("fresh_accelerate_state")

# Compiled against eager, fp32: inductor fuses the element-wise ops and the layer-norm and softmax reductions into
# its own loops (other summation orders, its own vectorised exp/erf, within an ulp or two of ATen's), and leaves the
# matmuls to the same BLAS. That is a whole encoder run with its sums reordered: tests/rounding.py's estimate for the
# 2-layer 32-wide test BERT, 1e-5 to 2e-5 relative on O(1) values; 2e-5 of the largest entry. (Seen: 2.4e-7 of 2.4.)
COMPILED_RELATIVE = 2e-5


def _config(tmp_path, tmp_path_factory, **train):
    raw = helpers.tiny_config(
        helpers.shared_shards(tmp_path_factory), tmp_path / "run", helpers.minilm_tokenizer(), train=train
    )
    raw["teacher"]["trained"] = False
    raw["train"] = {"batch_size": 4, "max_steps": 2, "warmup_ratio": 0.2, "log_every": 1, "save_every": 0, **train}
    return raw


def test_null_switches_take_the_device_default_and_set_ones_are_kept(tmp_path, tmp_path_factory) -> None:
    config = config_from_dict(_config(tmp_path, tmp_path_factory, mixed_precision="bf16"))
    cpu, cuda = resolve(config, "cpu"), resolve(config, "cuda")
    assert (cpu.chunk_size, cpu.teacher_bf16, cpu.compile, cpu.length_bucket) == (16, True, False, 1)
    assert (cuda.chunk_size, cuda.teacher_bf16, cuda.compile, cuda.length_bucket) == (64, True, True, 16)
    assert cuda.chunking == Chunking(64, 16)
    fp32 = config_from_dict(_config(tmp_path, tmp_path_factory))
    assert not resolve(fp32, "cuda").teacher_bf16  # no bf16 autocast: the teacher stays as loaded
    speed = {"chunk_size": 0, "teacher_bf16": False, "compile": True, "length_bucket": 32}
    chosen = resolve(config_from_dict(_config(tmp_path, tmp_path_factory, mixed_precision="bf16", speed=speed)), "cpu")
    assert (chosen.chunk_size, chosen.teacher_bf16, chosen.compile, chosen.length_bucket) == (0, False, True, 32)


@pytest.mark.parametrize(
    ("train", "teacher", "message"),
    [
        ({"speed": {"teacher_bf16": True}}, {}, "train.speed.teacher_bf16: true needs train.mixed_precision=bf16"),
        ({"mixed_precision": "bf16", "speed": {"teacher_bf16": True}}, {"trained": True}, "needs a frozen teacher"),
        ({"speed": {"chunk_size": -1}}, {}, "train.speed.chunk_size: must be >= 0, got -1"),
        ({"speed": {"length_bucket": 0}}, {}, "train.speed.length_bucket: must be > 0, got 0"),
        ({"speed": {"chunk": 4}}, {}, "unknown config key 'train.speed.chunk'"),
    ],
)
def test_bad_speed_settings_are_refused_naming_the_key(tmp_path, tmp_path_factory, train, teacher, message) -> None:
    raw = _config(tmp_path, tmp_path_factory, **train)
    raw["teacher"].update(teacher)
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        config_from_dict(raw)


def test_bf16_held_teacher_is_cast_once_and_stays_within_the_bf16_bounds(tmp_path, tmp_path_factory) -> None:
    """A frozen teacher held in bf16 against one held in fp32 under the same autocast, and against fp32: the
    existing bf16 bound of the loop (losses within 0.05 of fp32, test_train_loop.py)."""
    from lead_dist.train.loop import train

    runs = {}
    for name, precision, held in [("fp32", "no", False), ("autocast", "bf16", False), ("held", "bf16", True)]:
        raw = _config(tmp_path / name, tmp_path_factory, mixed_precision=precision, speed={"teacher_bf16": held})
        train(config_from_dict(raw))
        helpers.reset_accelerate()
        runs[name] = helpers.losses(tmp_path / name / "run")
        recorded = json.loads((tmp_path / name / "run" / "run.json").read_text())["speed"]
        assert recorded["teacher_bf16"] is held
    assert runs["held"] != runs["autocast"]  # the cast changed the teacher's numbers: it really ran in bf16
    assert runs["held"] == pytest.approx(runs["fp32"], abs=0.05)
    assert runs["autocast"] == pytest.approx(runs["fp32"], abs=0.05)


def test_apply_casts_only_the_teacher(tiny_bert_dir, tmp_path, tmp_path_factory) -> None:
    from lead_dist.models import load_model

    config = config_from_dict(_config(tmp_path, tmp_path_factory, mixed_precision="bf16"))
    models = {"student": load_model(tiny_bert_dir, kind="de"), "teacher": load_model(tiny_bert_dir, kind="de")}
    assert apply_to_models(config, models, resolve(config, "cpu")) is None  # nothing compiled on CPU by default
    assert {p.dtype for p in models["teacher"].parameters()} == {torch.bfloat16}
    assert {p.dtype for p in models["student"].parameters()} == {torch.float32}


def _bucketed_pair(tiny_bert_dir, backend: str):
    from lead_dist.models import load_model

    eager = load_model(tiny_bert_dir, kind="de", pooling="mean")
    compiled = load_model(tiny_bert_dir, kind="de", pooling="mean")
    counter = CompileCounter(backend)
    assert compile_blocks(compiled, counter) == 2
    texts = [" ".join(["alpha", "beta"] * k) for k in range(1, 12)]
    return eager, compiled, counter, compiled.tokenize_passages([""] * 11, texts, 64)


def _close(actual: torch.Tensor, expected: torch.Tensor, what: str) -> None:
    bound = COMPILED_RELATIVE * float(expected.detach().abs().max())
    assert float((actual - expected).abs().max()) <= bound, what


def test_compiled_blocks_train_like_eager_and_count_one_graph_per_shape(tiny_bert_dir) -> None:
    """dynamo + AOT autograd (backend aot_eager, no C++ compiler): forward, layer capture and gradients as eager; the
    two blocks share one graph per shape, and a shape seen before compiles nothing."""
    eager, compiled, counter, tokens = _bucketed_pair(tiny_bert_dir, "aot_eager")
    chunking = Chunking(0, bucket=16)  # the whole batch at one bucketed length: one forward shape
    grads = []
    for model in (eager, compiled):
        model.train(False)
        reps = encode(model, tokens, (0,), chunking)
        (reps.final.sum() + reps.layers.pow(2).sum()).backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
        if model is compiled:
            assert counter.count == 1  # one graph (AOT autograd derives its backward), shared by both blocks
            _close(reps.final, encode(eager, tokens, (0,), chunking).final, "final")
    _close(grads[1], grads[0], "gradients")
    with torch.no_grad():
        encode(compiled, tokens, (0,), chunking)
        assert counter.count == 2  # inference of the same shape is a new graph (no autograd) ...
        encode(compiled, tokens, (0,), chunking)
        assert counter.count == 2  # ... and only once
        # 11 texts of 4..24 tokens at [11, 32]; in chunks of 4 (longest first): [4, 32], [4, 16], [3, 16]
        encode(compiled, tokens, (0,), Chunking(4, bucket=16))
        assert counter.count == 5


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None, reason="inductor needs a C++ compiler")
def test_inductor_compiled_blocks_equal_eager_in_fp32(tiny_bert_dir, monkeypatch) -> None:
    """The real backend on CPU (about a minute of C++ compilation on the shared build machine): one shape, fp32."""
    # Compiled here, not read from inductor's on-disk caches: their keys leave out ATEN_CPU_CAPABILITY, so code
    # generated for AVX-512 in an earlier run was handed to a run under ATEN_CPU_CAPABILITY=default, whose headers
    # declare no vector types (a C++ compile error, torch 2.13).
    import torch._inductor.config as inductor_config

    monkeypatch.setattr(inductor_config, "force_disable_caches", True)
    eager, compiled, counter, tokens = _bucketed_pair(tiny_bert_dir, "inductor")
    with torch.no_grad():
        got, want = encode(compiled, tokens, (0, 1), Chunking()), encode(eager, tokens, (0, 1), Chunking())
    assert counter.count == 1
    _close(got.final, want.final, "final")
    _close(got.layers, want.layers, "layers")


@pytest.mark.slow
def test_compiled_training_loop_logs_its_recompiles_and_matches_eager(tmp_path, tmp_path_factory, monkeypatch) -> None:
    """`train.speed.compile=true` through the real loop (aot_eager instead of inductor: no minutes of C++ builds).
    With the length bucket above every collated length, every chunk has one length, so after the first step (which
    compiles each shape) nothing recompiles; and the first step's loss, from the same initial weights, is eager's."""
    from lead_dist.train import speed as speed_module
    from lead_dist.train.loop import train

    monkeypatch.setattr(speed_module, "CompileCounter", lambda backend="inductor": CompileCounter("aot_eager"))
    losses, records = {}, {}
    for name, compiled in (("eager", False), ("compiled", True)):
        raw = _config(tmp_path / name, tmp_path_factory, max_steps=3)
        raw["train"]["speed"] = {"compile": compiled, "length_bucket": 64, "chunk_size": 8}
        train(config_from_dict(raw))
        helpers.reset_accelerate()
        losses[name] = helpers.losses(tmp_path / name / "run")
        lines = (tmp_path / name / "run" / "log.jsonl").read_text().splitlines()
        records[name] = [r for r in map(json.loads, lines) if "step_s" in r]
    assert all("recompiles" not in r for r in records["eager"])
    counts = [r["recompiles"] for r in records["compiled"]]
    assert counts[0] > 0 and counts == [counts[0]] * 3, counts
    # Same weights, the same batch: the first loss differs by the encoders' rounding (COMPILED_RELATIVE of each
    # output) carried through the scores' softmaxes, whose cross-entropies change by at most twice the largest score
    # change; scores of these 32- and 48-wide models stay below 100, losses near 5: 4 terms x 2 x 2e-5 x 100 / 5.
    assert losses["compiled"][0] == pytest.approx(losses["eager"][0], rel=4 * 2 * COMPILED_RELATIVE * 100 / 5)
