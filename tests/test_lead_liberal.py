"""The liberal property of LEAD (LEAD_SPEC section 1): teacher and student share nothing but raw text.

The teacher uses the packaged MiniLM WordPiece tokenizer; the student a byte-level BPE tokenizer trained here with
`tokenizers`. They differ in vocabulary, width, depth and model kind, and still compute one LEAD loss over the same
candidate passages, and an optimizer step on both lowers it.
"""

from __future__ import annotations

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
from transformers import BertConfig, PreTrainedTokenizerFast

from lead_dist.lead import lead_loss
from lead_dist.models import model_from_config

QUERIES = ["how do tides form", "what powers a jet engine", "why is the sky blue"]
TITLES = ["Tides", "Jet engines", "Rayleigh scattering"]
PASSAGES = [
    "Tides are the rise and fall of sea levels caused by the gravity of the moon and the sun.",
    "A jet engine burns fuel with compressed air and pushes hot exhaust backwards for thrust.",
    "Short blue wavelengths of sunlight scatter more strongly in air than long red ones.",
]


def bpe_tokenizer() -> PreTrainedTokenizerFast:
    """A small BPE tokenizer trained on the test's own text, with BERT-like special tokens."""
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=specials, show_progress=False)
    tok.train_from_iterator(QUERIES + TITLES + PASSAGES, trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )


def small_config(vocab_size: int, hidden: int, layers: int) -> BertConfig:
    return BertConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=2 * hidden,
        max_position_embeddings=128,
    )


def teacher_scores(teacher, student_layers_k: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Teacher scores over every (query, passage) pair: [Q, C] final and [K, Q, C] per layer."""
    q, c = len(QUERIES), len(PASSAGES)
    if teacher.kind == "ce":
        queries = [query for query in QUERIES for _ in range(c)]
        pairs = teacher.tokenize_pairs(queries, TITLES * q, PASSAGES * q, max_length=64)
        final, layers = teacher(**pairs, layers=student_layers_k)
        return final.view(q, c), layers.view(len(student_layers_k), q, c)
    q_reps = teacher(**teacher.tokenize_queries(QUERIES, 16), layers=student_layers_k)
    p_reps = teacher(**teacher.tokenize_passages(TITLES, PASSAGES, 48), layers=student_layers_k)
    return teacher.score(q_reps, p_reps)


@pytest.mark.parametrize("teacher_kind", ["de", "cb", "ce"])
def test_different_tokenizers_widths_depths_and_kinds_share_one_loss(minilm_dir: str, teacher_kind: str) -> None:
    torch.manual_seed(0)
    # Teacher: MiniLM's WordPiece vocabulary, 4 layers x 48 wide, of the kind under test.
    teacher = model_from_config(small_config(30522, 48, 4), minilm_dir, teacher_kind)
    # Student: a BPE vocabulary of ~300 tokens, 2 layers x 32 wide, always a dual encoder.
    bpe = bpe_tokenizer()
    assert bpe.get_vocab().keys() != teacher.tokenizer.get_vocab().keys()
    student = model_from_config(small_config(len(bpe), 32, 2), bpe, "de", pooling="mean")
    assert teacher.hidden_size != student.hidden_size and teacher.num_layers != student.num_layers
    # Models stay in eval mode (no dropout) so the loss before and after the step is comparable; gradients flow.

    teacher_layers, student_layers = (1, 3), (0, 1)
    labels = torch.arange(len(QUERIES))
    params = list(student.parameters()) + list(teacher.parameters())
    optimizer = torch.optim.AdamW(params, lr=1e-4)

    def loss_now() -> tuple[torch.Tensor, dict]:
        s_final, s_layers = student.score(
            student(**student.tokenize_queries(QUERIES, 16), layers=student_layers),
            student(**student.tokenize_passages(TITLES, PASSAGES, 48), layers=student_layers),
        )
        t_final, t_layers = teacher_scores(teacher, teacher_layers)
        assert s_final.shape == t_final.shape == (3, 3)
        assert s_layers.shape == t_layers.shape == (2, 3, 3)
        return lead_loss(s_final, t_final, s_layers, t_layers, labels, teacher_trained=True)

    before, terms = loss_now()
    assert torch.isfinite(before)
    assert terms["layers"] > 0  # the two models' layer distributions genuinely differ
    optimizer.zero_grad()
    before.backward()
    # Both models receive gradient through the one loss (the teacher is trained jointly).
    assert student.backbone.embeddings.word_embeddings.weight.grad.abs().sum() > 0
    assert teacher.backbone.embeddings.word_embeddings.weight.grad.abs().sum() > 0
    optimizer.step()
    with torch.no_grad():
        after, _ = loss_now()
    assert after < before
