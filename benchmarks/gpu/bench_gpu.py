"""GPU check and throughput of lead_dist in one call (run by benchmarks/gpu/run.sh on a lent H100 / H200).

    python benchmarks/gpu/bench_gpu.py --out OUT/gpu_throughput.json             # on the GPU machine
    python benchmarks/gpu/bench_gpu.py --dry-run --out /tmp/gpu_dry.json         # here: CPU, tiny shapes

Writes one JSON with:
* correctness: the LEAD loss of one batch in bf16 autocast against fp32 (relative difference within `--bf16-rtol`),
  and a ZeRO-2 step: `lead-dist train` under torchrun with launch/deepspeed/zero2.json against the same run without
  DeepSpeed (losses of the first steps within tolerance, engine reported by the run as deepspeed-zero2);
* training throughput and MFU in bf16 of a BERT-base-sized 12-layer teacher (random weights from its config) with
  a 6-layer student cut from it, LEAD with global candidates, passages of 144 tokens and queries of 32, teacher
  frozen and joint (the loop's engines and objective, as benchmarks/throughput_setup.py drives them);
* corpus encoding: passages/s of the student and of the teacher (bf16, inference mode, 144 tokens);
* exact search over 1M x 768 vectors with lead_dist's torch backend (queries/s; top-10 checked against a plain
  full matmul on a sample of queries).
A failed check is recorded in the JSON (and the exit status is 1) rather than stopping the measurements.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))  # lead_dist from the carried working tree (not installed on the GPU machine)

CARRIED_TOKENIZER = REPO_ROOT / ".cache" / "gpu_wheels" / "minilm_tokenizer"
BERT_BASE = {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072}
TINY = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 128}


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="JSON file to write")
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    parser.add_argument("--tiny", action="store_true", help="tiny shapes (a check of the script, not a benchmark)")
    parser.add_argument("--dry-run", action="store_true", help="= --device cpu --tiny")
    parser.add_argument("--tokenizer", default=None, help="tokenizer folder (default: the carried MiniLM one)")
    parser.add_argument("--batch-size", type=int, default=32, help="queries per training step")
    parser.add_argument("--num-negatives", type=int, default=7, help="hard negatives per query")
    parser.add_argument("--steps", type=int, default=10, help="timed training steps (after 3 warm-up steps)")
    parser.add_argument("--bf16-rtol", type=float, default=0.05, help="bf16 vs fp32 loss: relative tolerance")
    parser.add_argument("--skip-zero2", action="store_true", help="skip the ZeRO-2 check (needs deepspeed)")
    args = parser.parse_args(argv)
    if args.dry_run:
        args.device, args.tiny = "cpu", True
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no GPU here; use --dry-run (CPU, tiny) to check the script")
    if args.tokenizer is None:
        args.tokenizer = (
            str(CARRIED_TOKENIZER) if CARRIED_TOKENIZER.is_dir() else "sentence-transformers/all-MiniLM-L6-v2"
        )
    return args


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build_models(args: argparse.Namespace, device: torch.device) -> tuple[Any, Any]:
    from transformers import BertConfig

    from lead_dist.models import model_from_config, student_from_teacher

    shape = TINY if args.tiny else BERT_BASE
    torch.manual_seed(0)
    config = BertConfig(**shape, max_position_embeddings=512)
    teacher = model_from_config(config, args.tokenizer, "de", pooling="cls", similarity="cos")
    student = student_from_teacher(teacher, 1 if args.tiny else 6)
    return teacher.to(device), student.to(device)


def random_batch(args: argparse.Namespace, vocab: int, device: torch.device) -> dict[str, Any]:
    """Full-length token ids (no padding), queries 32 and passages 144 tokens: FLOPs = what the shapes say."""
    generator = torch.Generator().manual_seed(0)
    queries, per_query = args.batch_size, 1 + args.num_negatives

    def tokens(rows: int, length: int) -> dict[str, torch.Tensor]:
        ids = torch.randint(1000, vocab, (rows, length), generator=generator)
        ids[:, 0] = 101  # [CLS]
        ids[:, -1] = 102  # [SEP]
        ones = torch.ones_like(ids)
        return {"input_ids": ids.to(device), "attention_mask": ones.to(device), "token_type_ids": (ones * 0).to(device)}

    side = {
        "queries": tokens(queries, 16 if args.tiny else 32),
        "passages": tokens(queries * per_query, 32 if args.tiny else 144),
    }
    return {"student": side, "teacher": side}


def make_variant(teacher: Any, student: Any, batch: dict, joint: bool, dtype: str, device: torch.device) -> Any:
    """A benchmarks.throughput_setup.Variant on `device` (same engines, objective and schedule)."""
    from benchmarks.throughput_setup import SizeSpec, TrainedState, Variant, run_config
    from lead_dist.lead import LayerSchedule

    k = min(3, student.num_layers)
    spec = SizeSpec("gpu", None, {}, len(batch["student"]["queries"]["input_ids"]), 0, 32, 144, k)
    config = run_config(spec, "lead", "de", joint, dtype)
    shared = TrainedState()
    trainees = {
        "student": shared.trainee("student", student, True),
        "teacher": shared.trainee("teacher", teacher, joint),
    }
    schedule = LayerSchedule("random", student.num_layers, teacher.num_layers, k, config.seed, 10)
    variant = Variant("gpu", dtype, "lead", "de", joint, config, trainees, batch, schedule, spec.batch_size)
    variant.device = device
    return variant


def loss_of(variant: Any, device: torch.device) -> float:
    """The objective's loss on the batch, no step taken."""
    from lead_dist.train import engines
    from lead_dist.train.objective import distill_loss

    variant.activate()
    for trainee in variant.trainees.values():
        trainee.raw.eval()  # no dropout: both precisions must see the same function
    layers = variant.schedule.at(0)
    with torch.no_grad(), engines.autocast(variant.config, device):
        total, _ = distill_loss(
            variant.trainees["student"].model, variant.trainees["teacher"].model, variant.batch, layers[0], layers[1],
            variant.config.lead, teacher_trained=variant.joint, candidates="global", mode="lead",
        )  # fmt: skip
    return float(total)


def check_bf16(teacher: Any, student: Any, batch: dict, device: torch.device, rtol: float) -> dict[str, Any]:
    """bf16 autocast against fp32: the LEAD loss, and the student's passage embeddings.

    A random model's embeddings are nearly parallel, so its scores are nearly uniform and the loss sits close to
    log(candidates) in either precision; the embeddings are therefore also compared after removing their common
    mean (relative error of the centred vectors), which does not hide a precision problem."""
    fp32 = loss_of(make_variant(teacher, student, batch, True, "no", device), device)
    bf16 = loss_of(make_variant(teacher, student, batch, True, "bf16", device), device)
    relative = abs(bf16 - fp32) / max(abs(fp32), 1e-12)
    passages = batch["student"]["passages"]
    student.eval()
    with torch.no_grad():
        exact = student(**passages).final.float()
        with torch.autocast(device.type, dtype=torch.bfloat16):
            low = student(**passages).final.float()
    centred = exact - exact.mean(dim=0, keepdim=True)
    embedding_error = float((low - exact).norm() / centred.norm().clamp_min(1e-12))
    embedding_tolerance = 0.1
    return {
        "fp32_loss": fp32,
        "bf16_loss": bf16,
        "relative_difference": relative,
        "rtol": rtol,
        "centred_embedding_relative_error": embedding_error,
        "embedding_tolerance": embedding_tolerance,
        "ok": relative <= rtol and embedding_error <= embedding_tolerance,
    }


def check_zero2(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """`lead-dist train` on 1 process with and without ZeRO-2 from the same seed: losses of its steps agree."""
    shards = workdir / "shards"
    subprocess.run(
        [sys.executable, "-m", "lead_dist.cli", "prepare", "--format", "demo", "--input", str(workdir / "demo"),
         "--out", str(shards), "--shards", "2"],
        check=True, cwd=REPO_ROOT, capture_output=True, text=True,
    )  # fmt: skip
    config = REPO_ROOT / "benchmarks" / "gpu" / "zero2_check.yaml"
    precision = "no" if args.device == "cpu" else "bf16"  # DeepSpeed's bf16 needs a GPU
    losses, engines_used = {}, {}
    for name, extra in (
        ("plain", []),
        ("zero2", ["student.deepspeed=launch/deepspeed/zero2.json", "teacher.deepspeed=launch/deepspeed/zero2.json"]),
    ):
        out = workdir / name
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "1", "--master_port", "29533"]
        command += ["-m", "lead_dist.cli", "train", str(config), f"data.train={shards}", f"output_dir={out}"]
        command += [f"train.mixed_precision={precision}", f"student.tokenizer={args.tokenizer}"]
        command += [f"teacher.tokenizer={args.tokenizer}", *extra]
        proc = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
        if proc.returncode != 0:
            return {"ok": False, "error": f"{name} run failed: {proc.stderr[-3000:]}"}
        records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines() if line.strip()]
        losses[name] = [r["loss"]["total"] for r in records if "loss" in r and "step_s" in r]
        engines_used[name] = json.loads((out / "run.json").read_text())["engines"]
    tolerance = 0.05 if precision == "bf16" else 1e-3
    pairs = list(zip(losses["plain"], losses["zero2"], strict=True))
    worst = max(abs(a - b) / max(abs(a), 1e-12) for a, b in pairs)
    engine_ok = engines_used["zero2"].get("student") == "deepspeed-zero2"
    return {
        "precision": precision,
        "losses": losses,
        "engines": engines_used,
        "worst_relative_difference": worst,
        "rtol": tolerance,
        "ok": worst <= tolerance and engine_ok and len(pairs) >= 2,
    }


def measure_training(teacher: Any, student: Any, batch: dict, args: argparse.Namespace, device: torch.device) -> dict:
    from lead_dist.train.flops import peak_matmul_flops

    peak = peak_matmul_flops(torch.bfloat16, device)
    results: dict[str, Any] = {"matmul_peak_tflops_bf16": peak / 1e12}
    for joint in (False, True):
        variant = make_variant(teacher, student, batch, joint, "bf16", device)
        for _ in range(3):  # warm-up: kernel selection, allocator, optimizer state
            variant.step()
        sync(device)
        seconds = []
        for _ in range(args.steps):
            start = time.perf_counter()
            variant.step()
            sync(device)
            seconds.append(time.perf_counter() - start)
        flops, tokens = variant.work()
        step_s = statistics.median(seconds)
        results["lead-de-" + ("joint" if joint else "frozen")] = {
            "examples_per_s": variant.examples / step_s,
            "tokens_per_s": tokens / step_s,
            "step_s_median": step_s,
            "step_s": seconds,
            "step_tflops": flops / 1e12,
            "mfu": flops / step_s / peak,
            "peak_memory_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
        }
    return results


def measure_encoding(teacher: Any, student: Any, args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    rows, length = (64, 32) if args.tiny else (512, 144)
    ids = torch.randint(1000, 30000, (rows, length), device=device)
    mask = torch.ones_like(ids)
    results = {}
    for name, model in (("student", student), ("teacher", teacher)):
        model.eval()
        with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16):
            model(input_ids=ids, attention_mask=mask)  # warm-up
            sync(device)
            times = []
            for _ in range(5):
                start = time.perf_counter()
                model(input_ids=ids, attention_mask=mask)
                sync(device)
                times.append(time.perf_counter() - start)
        results[f"{name}_passages_per_s"] = rows / statistics.median(times)
    results["batch"], results["passage_length"] = rows, length
    return results


def measure_search(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    import numpy as np

    from lead_dist.retrieval.index_torch import TorchExactIndex

    num, dim, num_queries, k = (20_000, 64, 256, 10) if args.tiny else (1_000_000, 768, 8192, 10)
    rng = np.random.default_rng(0)
    corpus = rng.standard_normal((num, dim), dtype=np.float32)
    queries = rng.standard_normal((num_queries, dim), dtype=np.float32)
    index = TorchExactIndex(dim, device=device)
    start = time.perf_counter()
    index.add(corpus, [str(i) for i in range(num)])
    add_s = time.perf_counter() - start
    index.search(queries[:64], k)  # warm-up (and builds the contiguous matrix)
    sync(device)
    start = time.perf_counter()
    result = index.search(queries, k)
    sync(device)
    search_s = time.perf_counter() - start
    # Exactness on a sample: the same top-k ids as one full fp32 matmul (ties aside, random vectors have none).
    sample = torch.from_numpy(queries[:32]).to(device)
    full = sample @ torch.from_numpy(corpus).to(device).T
    expected = torch.topk(full, k, dim=1).indices.cpu().numpy().astype(str)
    agree = float(np.mean([set(expected[i]) == set(result.doc_ids[i]) for i in range(len(expected))]))
    return {
        "vectors": num,
        "dim": dim,
        "queries": num_queries,
        "k": k,
        "add_s": add_s,
        "search_s": search_s,
        "queries_per_s": num_queries / search_s,
        "top_k_agreement_with_full_matmul": agree,
    }


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    report: dict[str, Any] = {
        "machine": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor(),
            "tiny": args.tiny,
        },
        "shapes": {"teacher": TINY if args.tiny else BERT_BASE, "student_layers": 1 if args.tiny else 6,
                   "batch_size": args.batch_size, "num_negatives": args.num_negatives,
                   "query_length": 16 if args.tiny else 32, "passage_length": 32 if args.tiny else 144},
    }  # fmt: skip
    teacher, student = build_models(args, device)
    batch = random_batch(args, len(student.tokenizer), device)
    report["bf16_vs_fp32"] = check_bf16(teacher, student, batch, device, args.bf16_rtol)
    print("bf16 vs fp32:", json.dumps(report["bf16_vs_fp32"]), flush=True)
    if not args.skip_zero2:
        with tempfile.TemporaryDirectory(prefix="zero2-check-") as tmp:
            report["zero2_step"] = check_zero2(args, Path(tmp))
        print("zero2:", json.dumps(report["zero2_step"])[:500], flush=True)
    report["training_bf16"] = measure_training(teacher, student, batch, args, device)
    print(
        "training:",
        json.dumps({k: v.get("mfu") if isinstance(v, dict) else v for k, v in report["training_bf16"].items()}),
        flush=True,
    )
    report["encoding_bf16"] = measure_encoding(teacher, student, args, device)
    report["exact_search"] = measure_search(args, device)
    print("search:", json.dumps(report["exact_search"]), flush=True)
    checks = [report["bf16_vs_fp32"]["ok"], report.get("zero2_step", {"ok": True})["ok"]]
    mfu = report["training_bf16"]["lead-de-frozen"]["mfu"]
    report["goals"] = {"bf16_mfu_at_least_0.35": {"value": mfu, "met": mfu >= 0.35, "meaningful": not args.tiny}}
    report["checks_ok"] = all(checks)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2, sort_keys=True, default=str) + "\n")
    print(f"wrote {args.out}; checks ok: {report['checks_ok']}", flush=True)
    return 0 if report["checks_ok"] else 1


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.exit(main(sys.argv[1:]))
