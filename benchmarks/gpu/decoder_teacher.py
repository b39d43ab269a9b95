"""A decoder-only LLM teacher of Qwen3-Embedding-0.6B's shape (random weights) frozen under the ZeRO-3
teacher-inference config beside a 6-layer student, against the same teacher held plainly, on one GPU: peak GPU
memory and step time (issue 22).

    python -m benchmarks.gpu.decoder_teacher --out OUT/gpu_decoder_teacher.json     # on the GPU machine
    python -m benchmarks.gpu.decoder_teacher --dry-run --out /tmp/decoder.json      # here: CPU, tiny teacher, fp32

The same two runs as benchmarks/gpu/large_teacher.py (`compare_plain_and_zero3`: a real `lead-dist train` loop under
torchrun of benchmarks/throughput/configs/large_teacher.yaml, student under ZeRO-2 in both, the teacher frozen and
held plainly or by launch/deepspeed/zero3_inference.json), with the teacher replaced by a Qwen3 decoder as
Qwen3-Embedding is run: last-token pooling, cosine, EOS appended, a query instruction. Qwen3-0.6B's config (28 blocks,
1024 wide, 16 query and 8 key/value heads of 128, FFN 3072, a 151,669-token vocabulary, tied embeddings) gives about
596M parameters, 440M of them outside the embedding matrix. No model hub: the tokenizer is a byte-level BPE of the
256 byte symbols and Qwen's <|endoftext|>, built here (every text encodes; a text takes about 4 times the tokens of
the real vocabulary's, and passages are cut at `data.passage_max_length` either way). Its ids are the first of the
vocabulary, so the embedding matrix keeps its real size.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.gpu.large_teacher import CONFIG, STUDENT_ZERO2, TINY_STUDENT, compare_plain_and_zero3
from benchmarks.harness.fixtures import gpu_tokenizer

QWEN3_0_6B = {
    "model_type": "qwen3", "vocab_size": 151669, "hidden_size": 1024, "num_hidden_layers": 28,
    "num_attention_heads": 16, "num_key_value_heads": 8, "head_dim": 128, "intermediate_size": 3072,
    "max_position_embeddings": 32768, "rope_theta": 1000000.0, "rms_norm_eps": 1e-6, "tie_word_embeddings": True,
}  # fmt: skip
TINY_QWEN3 = QWEN3_0_6B | {
    "vocab_size": 300, "hidden_size": 64, "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 2,
    "head_dim": 16, "intermediate_size": 128, "max_position_embeddings": 512,
}  # fmt: skip
# Qwen3-Embedding's instruction for web search queries (its model card's format): YAML double quotes keep the \n
INSTRUCTION = '"Instruct: Given a web search query, retrieve relevant passages that answer the query\\nQuery:"'


def byte_level_tokenizer(folder: Path) -> Path:
    """A Qwen2Tokenizer over the 256 byte-level symbols (no merges) with <|endoftext|> as EOS and padding."""
    from tokenizers import pre_tokenizers
    from transformers import Qwen2Tokenizer

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    vocab = {token: index for index, token in enumerate(specials + pre_tokenizers.ByteLevel.alphabet())}
    Qwen2Tokenizer(vocab=vocab, merges=[]).save_pretrained(folder)
    return folder


def _yaml_scalar(value: Any) -> str:
    """YAML 1.1 (PyYAML) reads 1e-06 as a string: a float is written with a point and a signed exponent."""
    if isinstance(value, float) and "e" in repr(value):
        return f"{value:.1e}"
    return str(value).lower() if isinstance(value, bool) else str(value)


def _flow_map(values: dict[str, Any]) -> str:
    return "{" + ", ".join(f"{key}: {_yaml_scalar(value)}" for key, value in values.items()) + "}"


def overrides(args: argparse.Namespace, shards: Path, tokenizer: Path) -> list[str]:
    shape = TINY_QWEN3 if args.dry_run else QWEN3_0_6B
    given = [f"data.train={shards}", "teacher.trained=false", "train.max_steps=5", STUDENT_ZERO2]
    given += [f"teacher.config={_flow_map(shape)}", f"teacher.tokenizer={tokenizer}", "teacher.pooling=lasttoken"]
    given += ["teacher.similarity=cos", "teacher.append_eos=true", f"teacher.query_prompt={INSTRUCTION}"]
    given += [f"student.tokenizer={args.tokenizer}"]
    if args.dry_run:
        given += [f"student.config={TINY_STUDENT}", "train.mixed_precision=no", "lead.k=2"]
    else:
        given += ["train.mixed_precision=bf16", "train.batch_size=32", "data.passage_max_length=144"]
    return given


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny models, fp32")
    parser.add_argument("--tokenizer", default=None, help="the student's tokenizer (default: the carried MiniLM one)")
    args = parser.parse_args(argv)
    args.tokenizer = gpu_tokenizer(args.tokenizer)
    with tempfile.TemporaryDirectory(prefix="decoder-teacher-") as tmp:
        tokenizer = byte_level_tokenizer(Path(tmp) / "byte_level_qwen")
        report = compare_plain_and_zero3(CONFIG, lambda shards: overrides(args, shards, tokenizer), args)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
