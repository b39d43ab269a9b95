"""A dual encoder's per-layer scoring options (layer_pooling, layer_similarity, layer_scale): LEAD's layer scores
computed by hand from the backbone's states, the final score unchanged, defaults, saving, and the config keys."""

from __future__ import annotations

import functools

import pytest
import torch

from lead_dist.config import ConfigError, config_from_dict
from lead_dist.models import DualEncoder, Reps, load_model, student_from_teacher


def test_layer_scales_apply_to_their_own_layer_by_hand() -> None:
    q = Reps(final=torch.tensor([[0.6, 0.8]]), layers=torch.tensor([[[2.0, 1.0]], [[1.0, -1.0]]]), scale=20.0,
             layer_scales=(1.0, 20.0))  # fmt: skip
    p = Reps(final=torch.tensor([[1.0, 0.0], [0.0, 1.0]]), layers=torch.tensor([[[3.0, 4.0], [0.5, 0.0]],
             [[2.0, 2.0], [0.0, -3.0]]]), scale=20.0, layer_scales=(1.0, 20.0))  # fmt: skip
    final, layers = DualEncoder.score(q, p)
    assert torch.equal(final, torch.tensor([[12.0, 16.0]]))  # 20 * (0.6, 0.8)
    # layer 0: (2,1).(3,4) = 10, (2,1).(0.5,0) = 1, scale 1; layer 1: (1,-1).(2,2) = 0, (1,-1).(0,-3) = 3, scale 20
    assert torch.equal(layers, torch.tensor([[[10.0, 1.0]], [[0.0, 60.0]]]))
    with pytest.raises(ValueError, match="different scales"):
        DualEncoder.score(q, Reps(final=p.final, layers=p.layers, scale=20.0, layer_scales=(2.0, 20.0)))
    with pytest.raises(ValueError, match="2 layers but 1 layer scales"):
        one = (1.0,)
        DualEncoder.score(Reps(q.final, q.layers, layer_scales=one), Reps(p.final, p.layers, layer_scales=one))


def test_reference_layer_scoring_by_hand_keeps_the_final_score(tiny_bert_dir) -> None:
    """final: 5 x cosine of masked means of the last layer; layers: raw dot of [CLS] states of each kept layer."""
    model = load_model(
        tiny_bert_dir, kind="de", pooling="mean", similarity="cos", scale=5.0, layer_pooling="cls",
        layer_similarity="dot",
    ).eval()  # fmt: skip
    queries = model.tokenize_queries(["first query here", "a second, longer query with more words"], 16)
    passages = model.tokenize_passages(["t1", ""], ["passage one text", "another passage"], 24)
    with torch.no_grad():
        q, p = model(**queries, layers=[0, 1]), model(**passages, layers=[0, 1])
        final, layers = DualEncoder.score(q, p)
        hq = model.backbone(**queries, output_hidden_states=True).hidden_states
        hp = model.backbone(**passages, output_hidden_states=True).hidden_states
    assert model.layer_scale == 1.0  # a dot layer similarity under a cosine final score: its own default
    # layer 0 (an intermediate block; hidden_states[0] is the embedding output): raw [CLS] dot products
    expected = hq[1][:, 0] @ hp[1][:, 0].T
    # the same 32-term fp32 dot products through other kernels: rounding of order 32 x 6e-8 relative
    torch.testing.assert_close(layers[0], expected, rtol=1e-5, atol=1e-5)

    def mean(states, mask):
        return (states * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)

    mq, mp = mean(hq[2], queries["attention_mask"]), mean(hp[2], passages["attention_mask"])
    cos = torch.nn.functional.normalize(mq, dim=-1) @ torch.nn.functional.normalize(mp, dim=-1).T
    torch.testing.assert_close(final, 5.0 * cos, rtol=1e-5, atol=1e-5)
    # layer 1 is the last block: scored as the final score (5 x cosine of masked means), not by the layer options
    torch.testing.assert_close(layers[1], 5.0 * cos, rtol=1e-5, atol=1e-5)


@functools.cache
def _tiny_de(folder) -> DualEncoder:
    return load_model(folder, kind="de").eval()  # one backbone for the 32 option combinations below


@pytest.mark.parametrize("pooling", ["cls", "mean"])
@pytest.mark.parametrize("similarity", ["dot", "cos"])
@pytest.mark.parametrize("layer_pooling", ["cls", "mean"])
@pytest.mark.parametrize("layer_similarity", ["dot", "cos"])
@pytest.mark.parametrize("layer_scale", [None, 0.5])
def test_a_drawn_last_block_is_scored_as_the_final_score(
    tiny_bert_dir, pooling, similarity, layer_pooling, layer_similarity, layer_scale
) -> None:
    """Issue 19: in the reference the final DE score IS the last block's layer score, whatever the layer options."""
    base = _tiny_de(tiny_bert_dir)
    model = DualEncoder(
        base.backbone, base.tokenizer, pooling=pooling, similarity=similarity,
        scale=7.0 if similarity == "cos" else None, layer_pooling=layer_pooling, layer_similarity=layer_similarity,
        layer_scale=layer_scale,
    ).eval()  # fmt: skip
    queries = model.tokenize_queries(["first query here", "a second, longer query with more words"], 16)
    passages = model.tokenize_passages(["t1", "", "t3"], ["passage one text", "another passage", "three"], 24)
    with torch.no_grad():
        q, p = model(**queries, layers=[0, 1]), model(**passages, layers=[0, 1])
        final, layers = DualEncoder.score(q, p)
    assert q.layer_scales == (model.layer_scale, model.scale)
    assert torch.equal(q.layers[1], q.final) and torch.equal(p.layers[1], p.final)  # the same vectors
    # The same products through einsum (bmm) and a matmul, times the same factor: reordered sums of 32 terms.
    bound = 32 * 2**-23 * model.scale * (q.final.abs() @ p.final.abs().T)
    assert (layers[1] - final).abs().le(bound).all(), (layers[1] - final).abs().max()
    # The intermediate block keeps the layer options: its scores are those of embed_layer's vectors.
    inter_q = model.embed_layer(model.backbone(**queries, output_hidden_states=True).hidden_states[1],
                                queries["attention_mask"])  # fmt: skip
    torch.testing.assert_close(q.layers[0], inter_q, rtol=1e-5, atol=1e-6)
    assert q.layer_scales[0] == model.layer_scale


def test_defaults_follow_the_final_score(tiny_bert_dir) -> None:
    same = load_model(tiny_bert_dir, kind="de", pooling="mean", similarity="cos", scale=7.0)
    assert (same.layer_pooling, same.layer_similarity, same.layer_scale) == ("mean", "cos", 7.0)
    tokens = same.tokenize_queries(["a query"], 8)
    with torch.no_grad():
        reps = same(**tokens, layers=[1])
    assert torch.equal(reps.layers[0], reps.final)  # layer 1 of 2 is the last layer: scored as the final one
    assert reps.layer_scales == (reps.scale,) and reps.scale == 7.0
    dot_layers = load_model(tiny_bert_dir, kind="de", pooling="cls", similarity="dot", layer_similarity="cos")
    assert (dot_layers.scale, dot_layers.layer_scale) == (1.0, 20.0)  # cosine's default scale for the layers
    explicit = load_model(tiny_bert_dir, kind="de", similarity="cos", layer_similarity="dot", layer_scale=0.5)
    assert explicit.layer_scale == 0.5
    with pytest.raises(ValueError, match="'layer_pooling' must be one of"):
        load_model(tiny_bert_dir, kind="de", layer_pooling="max")
    with pytest.raises(ValueError, match="'layer_scale' must be positive"):
        load_model(tiny_bert_dir, kind="de", layer_scale=0.0)


def test_layer_options_survive_saving_and_a_student_cut(tiny_bert_dir, tmp_path) -> None:
    model = load_model(tiny_bert_dir, kind="de", pooling="mean", similarity="cos", layer_pooling="cls",
                       layer_similarity="dot")  # fmt: skip
    model.save(tmp_path / "saved")
    again = load_model(tmp_path / "saved")
    assert again.options == model.options
    assert (again.layer_pooling, again.layer_similarity, again.layer_scale) == ("cls", "dot", 1.0)
    student = student_from_teacher(model, 1)
    assert student.options == model.options


def _raw(**student_options) -> dict:
    return {
        "stage": "distill",
        "mode": "lead",
        "data": {"train": "shards"},
        "student": {"config": {"num_hidden_layers": 2}, "tokenizer": "tok", "kind": "de", **student_options},
        "teacher": {"config": {"num_hidden_layers": 4}, "tokenizer": "tok", "kind": "de"},
        "lead": {"k": 2},
    }


def test_config_keys_are_checked_and_reach_the_model_options() -> None:
    config = config_from_dict(_raw(layer_pooling="cls", layer_similarity="dot", layer_scale=1.0), source="t")
    assert config.student.model_options() == {"layer_pooling": "cls", "layer_similarity": "dot", "layer_scale": 1.0}
    with pytest.raises(ConfigError, match=r"student\.layer_pooling: 'first' is not one of cls, mean"):
        config_from_dict(_raw(layer_pooling="first"), source="t")
    with pytest.raises(ConfigError, match=r"student\.layer_scale: must be > 0"):
        config_from_dict(_raw(layer_scale=-1.0), source="t")
    cb = _raw()
    cb["teacher"] = {"config": {"num_hidden_layers": 4}, "tokenizer": "tok", "kind": "cb", "layer_similarity": "dot"}
    with pytest.raises(ConfigError, match=r"teacher\.layer_similarity: not an option of a 'cb' model"):
        config_from_dict(cb, source="t")
