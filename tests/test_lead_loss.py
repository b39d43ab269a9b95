"""The LEAD loss (LEAD_SPEC sections 4, 6, 7) against an independent loop implementation and hand-worked values."""

from __future__ import annotations

import math
import random

import pytest
import torch

from lead_dist.lead import contrastive_loss, lead_loss
from tests.reference_lead import reference_lead

LN2, LN3 = math.log(2.0), math.log(3.0)


def _close(actual: torch.Tensor | float, expected: torch.Tensor | float, rel: float = 1e-6) -> None:
    def scalar(x: torch.Tensor | float) -> float:
        return float(x.detach()) if isinstance(x, torch.Tensor) else float(x)

    actual, expected = scalar(actual), scalar(expected)
    assert actual == pytest.approx(expected, rel=rel, abs=1e-12), (actual, expected)


def _random_case(rng: random.Random) -> tuple[list[torch.Tensor], torch.Tensor, dict]:
    queries, candidates, pairs = rng.randint(1, 4), rng.randint(2, 6), rng.randint(0, 3)
    gen = torch.Generator().manual_seed(rng.randrange(2**31))
    scale = rng.choice([0.5, 3.0, 8.0])  # spread so the distributions range from flat to peaked

    def scores(*shape: int) -> torch.Tensor:
        return (scale * torch.randn(*shape, generator=gen, dtype=torch.float64)).requires_grad_(True)

    tensors = [
        scores(queries, candidates),
        scores(queries, candidates),
        scores(pairs, queries, candidates),
        scores(pairs, queries, candidates),
    ]
    labels = torch.randint(0, candidates, (queries,), generator=gen)
    options = {
        "teacher_trained": rng.random() < 0.5,
        "temperature": rng.choice([1.0, 0.5, 2.3]),
        "layer_temperature": rng.choice([10.0, 1.0, 0.3]),
        "reweight": rng.random() < 0.5,
        "layer_coef": rng.choice([1.0, 0.7]),
        "student_coef": rng.choice([1.0, 0.4]),
        "teacher_coef": rng.choice([1.0, 1.9]),
        "response_coef": rng.choice([1.0, 2.5]),
        "detach_targets": rng.random() < 0.5,
    }
    return tensors, labels, options


def _grads(total: torch.Tensor, tensors: list[torch.Tensor]) -> list[torch.Tensor | None]:
    return list(torch.autograd.grad(total, tensors, allow_unused=True))


@pytest.mark.parametrize("case_seed", range(40))
def test_matches_independent_reference_values_and_gradients(case_seed: int) -> None:
    rng = random.Random(case_seed)
    tensors, labels, options = _random_case(rng)
    total, terms = lead_loss(*tensors, labels, **options)
    ref_total, ref_terms = reference_lead(*tensors, labels, **options)

    _close(total, ref_total)
    for name in ("student", "teacher", "response", "layers"):
        _close(terms[name], ref_terms[name])
    assert terms["layer_weights"].shape == (tensors[2].shape[0],)
    for mine, theirs in zip(terms["layer_weights"], ref_terms["layer_weights"], strict=True):
        _close(mine, theirs)
    for mine, theirs in zip(terms["layer_kl"], ref_terms["layer_kl"], strict=True):
        _close(mine, theirs)

    for name, mine, theirs in zip(
        ("student_final", "teacher_final", "student_layers", "teacher_layers"),
        _grads(total, tensors),
        _grads(ref_total, tensors),
        strict=True,
    ):
        # Same gradient flow (None = no path) and the same values.
        assert (mine is None) == (theirs is None), (name, options)
        if mine is not None:
            torch.testing.assert_close(mine, theirs, rtol=1e-6, atol=1e-12, msg=f"{name} {options}")


def _tiny_case() -> tuple[list[torch.Tensor], torch.Tensor]:
    # softmax([ln3, 0]) = [3/4, 1/4]; softmax([0, 0]) = [1/2, 1/2]; softmax([0, ln3]) = [1/4, 3/4].
    student_final = torch.tensor([[LN3, 0.0], [0.0, 0.0]], dtype=torch.float64, requires_grad=True)
    teacher_final = torch.tensor([[0.0, 0.0], [0.0, LN3]], dtype=torch.float64, requires_grad=True)
    student_layers = torch.zeros(2, 2, 2, dtype=torch.float64, requires_grad=True)
    teacher_layers = torch.tensor(
        [[[LN3, 0.0], [0.0, LN3]], [[0.0, 0.0], [0.0, 0.0]]], dtype=torch.float64, requires_grad=True
    )
    labels = torch.tensor([0, 1])
    return [student_final, teacher_final, student_layers, teacher_layers], labels


# Hand-worked values of the tiny case (T = 1):
# L_stu: q0 -ln(3/4) = ln(4/3), q1 -ln(1/2) = ln2; mean = ln(8/3) / 2. L_tch: q0 ln2, q1 ln(4/3): also ln(8/3) / 2.
# KL(P_T||Q_S): q0 p=[1/2,1/2] q=[3/4,1/4]: 1/2 ln(2/3) + 1/2 ln2 = ln2 - ln3/2;
#               q1 p=[1/4,3/4] q=[1/2,1/2]: 1/4 ln(1/2) + 3/4 ln(3/2) = 3/4 ln3 - ln2;  mean = ln3 / 8.
# KL(P_S||Q_T): q0 p=[3/4,1/4] q=[1/2,1/2]: 3/4 ln3 - ln2; q1 p=[1/2,1/2] q=[1/4,3/4]: ln2 - ln3/2; mean = ln3 / 8.
# Layer pair 0: teacher [[3/4,1/4],[1/4,3/4]] vs uniform student: KL = 3/4 ln3 - ln2 for both queries;
#   gap g0 = -ln(3/4) = ln(4/3) for both queries. Pair 1: uniform vs uniform: KL = 0, gap g1 = ln2.
# w = softmax(-g / 10): w0 = (3/4)^0.1 / ((3/4)^0.1 + (1/2)^0.1), w1 = 1 - w0.
HAND_STUDENT = math.log(8 / 3) / 2
HAND_TEACHER = math.log(8 / 3) / 2
HAND_FORWARD = LN3 / 8
HAND_REVERSE = LN3 / 8
HAND_PAIR0_KL = 0.75 * LN3 - LN2
HAND_W0 = 0.75**0.1 / (0.75**0.1 + 0.5**0.1)


def test_hand_computed_terms_trained_teacher() -> None:
    tensors, labels = _tiny_case()
    total, terms = lead_loss(*tensors, labels)
    _close(terms["student"], HAND_STUDENT)
    _close(terms["teacher"], HAND_TEACHER)
    _close(terms["response_forward"], HAND_FORWARD)
    _close(terms["response_reverse"], HAND_REVERSE)
    _close(terms["response"], HAND_FORWARD + HAND_REVERSE)
    _close(terms["layer_kl"][0], HAND_PAIR0_KL)
    assert float(terms["layer_kl"][1]) == pytest.approx(0.0, abs=1e-15)
    _close(terms["layer_gaps"][0], math.log(4 / 3))
    _close(terms["layer_gaps"][1], LN2)
    _close(terms["layer_weights"][0], HAND_W0)
    _close(terms["layer_weights"][1], 1 - HAND_W0)
    _close(terms["layers"], HAND_W0 * HAND_PAIR0_KL)
    _close(total, HAND_STUDENT + HAND_TEACHER + HAND_FORWARD + HAND_REVERSE + HAND_W0 * HAND_PAIR0_KL)


def test_hand_computed_frozen_no_reweight_and_coefficients() -> None:
    tensors, labels = _tiny_case()
    total, terms = lead_loss(
        *tensors, labels, teacher_trained=False, reweight=False, layer_coef=0.5, student_coef=2.0, response_coef=3.0
    )
    assert float(terms["teacher"]) == 0.0
    _close(terms["response"], HAND_FORWARD)  # frozen: only KL(P_T || Q_S)
    _close(terms["layers"], HAND_PAIR0_KL + 0.0)  # plain sum of the two pair KLs
    _close(total, 2.0 * HAND_STUDENT + 3.0 * HAND_FORWARD + 0.5 * HAND_PAIR0_KL)


def test_hand_computed_temperature_applies_to_the_target_only() -> None:
    tensors, labels = _tiny_case()
    _, terms = lead_loss(*tensors, labels, temperature=2.0)
    # Teacher q1 scores [0, ln3] / 2 = [0, ln sqrt3]: p = [1/(1+sqrt3), sqrt3/(1+sqrt3)]; q0 stays [1/2, 1/2].
    # Student learner untouched: q0 [3/4, 1/4], q1 [1/2, 1/2].
    s3 = math.sqrt(3.0)
    p1 = [1 / (1 + s3), s3 / (1 + s3)]
    kl_q0 = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)
    kl_q1 = p1[0] * math.log(p1[0] / 0.5) + p1[1] * math.log(p1[1] / 0.5)
    _close(terms["response_forward"], (kl_q0 + kl_q1) / 2)
    # Reverse: student target q0 [ln3, 0] / 2 -> [sqrt3/(1+sqrt3), 1/(1+sqrt3)] against teacher learner [1/2, 1/2];
    # q1 target [1/2, 1/2] against teacher learner [1/4, 3/4].
    rev_q0 = p1[1] * math.log(p1[1] / 0.5) + p1[0] * math.log(p1[0] / 0.5)
    rev_q1 = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    _close(terms["response_reverse"], (rev_q0 + rev_q1) / 2)
    # The ground-truth CEs ignore T.
    _close(terms["student"], HAND_STUDENT)


@pytest.mark.parametrize("temperature", [2.0, 0.5])
def test_layer_gaps_use_the_untempered_teacher_layer(temperature: float) -> None:
    """The reference re-weights by nll_loss(log_softmax(s_T^l), y): only the KL target is divided by T."""
    tensors, labels = _tiny_case()
    _, terms = lead_loss(*tensors, labels, temperature=temperature)
    # Pair 0's teacher layer, untempered: q0 softmax([ln3, 0]) = [3/4, 1/4], label 0; q1 softmax([0, ln3]), label 1:
    # both -ln(3/4). Pair 1: uniform, -ln(1/2). The gaps do not depend on T.
    _close(terms["layer_gaps"][0], math.log(4 / 3))
    _close(terms["layer_gaps"][1], LN2)
    _close(terms["layer_weights"][0], HAND_W0)
    # The pair KL does use T: target softmax([ln3, 0] / T) = [3^(1/T), 1] / (3^(1/T) + 1) against the uniform student.
    a = 3.0 ** (1.0 / temperature)
    p = [a / (a + 1), 1 / (a + 1)]
    kl = sum(x * math.log(x / 0.5) for x in p)  # the same for q0 and q1 (mirror images)
    _close(terms["layer_kl"][0], kl)
    _close(terms["layers"], HAND_W0 * kl)


def test_kl_is_zero_when_distributions_are_equal() -> None:
    gen = torch.Generator().manual_seed(0)
    final = torch.randn(3, 5, generator=gen, dtype=torch.float64)
    layers = torch.randn(2, 3, 5, generator=gen, dtype=torch.float64)
    # Shifting a row by a constant leaves its softmax unchanged, so these are still equal distributions.
    _, terms = lead_loss(final, final + 4.0, layers, layers - 1.5, torch.tensor([0, 4, 2]))
    assert abs(float(terms["response"])) < 1e-12
    assert torch.all(terms["layer_kl"].abs() < 1e-12)
    assert abs(float(terms["layers"])) < 1e-12


def test_layer_weights_sum_to_one_and_carry_no_gradient() -> None:
    gen = torch.Generator().manual_seed(1)
    tensors = [torch.randn(*s, generator=gen, dtype=torch.float64).requires_grad_(True) for s in [(4, 6)] * 2]
    layers = [torch.randn(3, 4, 6, generator=gen, dtype=torch.float64).requires_grad_(True) for _ in range(2)]
    labels = torch.tensor([0, 1, 5, 3])
    _, terms = lead_loss(*tensors, *layers, labels)
    assert terms["layer_weights"].requires_grad is False
    _close(terms["layer_weights"].sum(), 1.0)
    assert torch.all(terms["layer_weights"] > 0)
    # With the KL targets detached, the only path from the teacher layers into the loss would be the weights:
    # there must be none.
    total, _ = lead_loss(*tensors, *layers, labels, detach_targets=True)
    assert torch.autograd.grad(total, layers[1], allow_unused=True)[0] is None


def test_gap_reduce_hook_feeds_the_weights() -> None:
    tensors, labels = _tiny_case()
    # A reduction that makes every gap equal gives uniform weights: 1/2 each.
    _, terms = lead_loss(*tensors, labels, gap_reduce=lambda gaps: torch.zeros_like(gaps))
    assert terms["layer_weights"].tolist() == [0.5, 0.5]


@pytest.mark.parametrize("teacher_trained", [True, False])
@pytest.mark.parametrize("detach_targets", [True, False])
def test_which_tensors_receive_gradient(teacher_trained: bool, detach_targets: bool) -> None:
    gen = torch.Generator().manual_seed(2)
    tensors = [torch.randn(3, 4, generator=gen, dtype=torch.float64).requires_grad_(True) for _ in range(2)]
    tensors += [torch.randn(2, 3, 4, generator=gen, dtype=torch.float64).requires_grad_(True) for _ in range(2)]
    total, _ = lead_loss(
        *tensors, torch.tensor([0, 1, 2]), teacher_trained=teacher_trained, detach_targets=detach_targets
    )
    student_final, teacher_final, student_layers, teacher_layers = _grads(total, tensors)

    def nonzero(grad: torch.Tensor | None) -> bool:
        return grad is not None and bool(grad.abs().sum() > 0)

    assert nonzero(student_final) and nonzero(student_layers)
    # The teacher final also learns from its own CE and, as the learner, from KL(P_S || Q_T): only freezing stops it.
    assert nonzero(teacher_final) == teacher_trained
    # The teacher layers enter only as KL targets (the weights carry no gradient).
    assert nonzero(teacher_layers) == (teacher_trained and not detach_targets)


def test_response_only_with_k_zero_and_contrastive_loss() -> None:
    tensors, labels = _tiny_case()
    empty = torch.zeros(0, 2, 2, dtype=torch.float64)
    total_none, terms = lead_loss(tensors[0], tensors[1], None, None, labels)
    total_empty, _ = lead_loss(tensors[0], tensors[1], empty, empty, labels)
    _close(total_none, HAND_STUDENT + HAND_TEACHER + HAND_FORWARD + HAND_REVERSE)
    _close(total_empty, total_none)
    assert float(terms["layers"]) == 0.0 and terms["layer_weights"].shape == (0,)
    _close(contrastive_loss(tensors[0], labels), HAND_STUDENT)


def test_half_precision_scores_are_upcast() -> None:
    tensors, labels = _tiny_case()
    total, _ = lead_loss(*(t.detach().to(torch.bfloat16) for t in tensors), labels)
    assert total.dtype == torch.float32
    # bf16 keeps ~3 significant digits of ln3.
    _close(total, HAND_STUDENT + HAND_TEACHER + HAND_FORWARD + HAND_REVERSE + HAND_W0 * HAND_PAIR0_KL, rel=1e-2)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda t: t.__setitem__(0, torch.zeros(2, 3)), "student_final [2, 3] and teacher_final [2, 2]"),
        (lambda t: t.__setitem__(1, torch.zeros(2)), "teacher_final must have shape [Q, C]"),
        (lambda t: t.__setitem__(2, torch.zeros(2, 2)), "student_layers must have shape [K, Q, C]"),
        (lambda t: t.__setitem__(3, torch.zeros(1, 2, 2)), "K = 2 layers but teacher_layers has K = 1"),
        (lambda t: t.__setitem__(3, torch.zeros(2, 3, 2)), "expected [K, 2, 2]"),
        (lambda t: t.__setitem__(4, torch.tensor([0, 2])), "labels must lie in [0, 2)"),
        (lambda t: t.__setitem__(4, torch.tensor([0, -1])), "labels must lie in [0, 2)"),
        (lambda t: t.__setitem__(4, torch.tensor([0.0, 1.0])), "labels must be an integer tensor"),
        (lambda t: t.__setitem__(4, torch.tensor([0])), "labels must have shape [Q] = [2]"),
        (lambda t: t.__setitem__(0, torch.zeros(2, 2, dtype=torch.int64)), "must be a floating-point tensor"),
    ],
)
def test_bad_shapes_raise_clear_errors(change, message: str) -> None:
    tensors, labels = _tiny_case()
    args = [t.detach() for t in tensors] + [labels]
    change(args)
    with pytest.raises(ValueError) as excinfo:
        lead_loss(*args)
    assert message in str(excinfo.value)


def test_bad_temperatures_raise() -> None:
    tensors, labels = _tiny_case()
    with pytest.raises(ValueError, match="'temperature' must be > 0"):
        lead_loss(*tensors, labels, temperature=0.0)
    with pytest.raises(ValueError, match="'layer_temperature' must be > 0"):
        lead_loss(*tensors, labels, layer_temperature=-1.0)


def test_the_loss_never_reads_a_tensor_value_back_to_the_host() -> None:
    """On a GPU, reading a value (bool, item) waits for the device. Meta tensors have shapes and no values, so any
    such read raises: the whole loss, every term and the label checks, must run on them (issue 23)."""
    tensors, labels = _tiny_case()
    meta = [t.detach().to("meta").requires_grad_(True) for t in tensors]
    total, terms = lead_loss(*meta, labels.to("meta"), temperature=2.0)
    assert total.device.type == "meta" and terms["layer_weights"].shape == (2,)
    assert contrastive_loss(meta[0], labels.to("meta")).device.type == "meta"
    total.backward()  # the backward pass needs no value either
    assert meta[2].grad is not None and meta[2].grad.device.type == "meta"
