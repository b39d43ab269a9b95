"""Export: the folder loads in transformers and sentence-transformers with the model's own pooling, from a bare or
a DDP-wrapped model, replacing an earlier export atomically."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModel

from lead_dist.models import load_model
from lead_dist.train.export import export_dir, export_model, is_zero3_partitioned

TEXTS = ["what does bisect do", "Return the index where to insert item x in list a, assuming a is sorted."]


def _encode(model, texts: list[str]) -> torch.Tensor:
    with torch.no_grad():
        batch = model.tokenize_queries(texts, max_length=32)
        return model(batch["input_ids"], batch["attention_mask"]).final


@pytest.mark.parametrize(("pooling", "similarity"), [("mean", "cos"), ("cls", "dot")])
def test_exported_de_loads_in_transformers_and_sentence_transformers(
    tiny_bert_dir: Path, tmp_path: Path, pooling: str, similarity: str
) -> None:
    from sentence_transformers import SentenceTransformer

    torch.manual_seed(0)
    model = load_model(tiny_bert_dir, kind="de", pooling=pooling, similarity=similarity)
    model.train()  # as training leaves it: export must not depend on (or change) the mode
    path = export_model(model, export_dir(tmp_path / "run", "student"))
    assert path == tmp_path / "run" / "export" / "student"
    assert model.training

    expected = _encode(model.eval(), TEXTS)
    backbone = AutoModel.from_pretrained(path)
    batch = model.tokenize_queries(TEXTS, max_length=32)
    with torch.no_grad():
        hidden = backbone(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        reference = model.backbone(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    torch.testing.assert_close(hidden, reference.last_hidden_state)

    st = SentenceTransformer(str(path), device="cpu")
    st_embeddings = torch.from_numpy(st.encode(TEXTS, convert_to_numpy=True))
    # sentence-transformers applies no score scale; the DE's embeddings are the same vectors
    torch.testing.assert_close(st_embeddings, expected, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(_encode(load_model(path), TEXTS), expected, atol=1e-6, rtol=1e-5)


def test_export_of_a_ddp_wrapped_model_equals_the_bare_model(tiny_bert_dir: Path, tmp_path: Path) -> None:
    import torch.distributed as dist

    model = load_model(tiny_bert_dir, kind="de", pooling="mean", similarity="cos")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        assert dist.get_world_size() == 1
        wrapped = torch.nn.parallel.DistributedDataParallel(model)
        assert not is_zero3_partitioned(wrapped)
        export_model(wrapped, tmp_path / "ddp")
    finally:
        dist.destroy_process_group()
    torch.testing.assert_close(_encode(load_model(tmp_path / "ddp"), TEXTS), _encode(model, TEXTS))


def test_re_export_replaces_the_folder_and_leaves_no_temp_dirs(tiny_bert_dir: Path, tmp_path: Path) -> None:
    first = load_model(tiny_bert_dir, kind="cb", projection_dim=8)
    target = tmp_path / "export" / "teacher"
    export_model(first, target)
    (target / "stale.txt").write_text("from an older export")
    second = load_model(tiny_bert_dir, kind="ce")
    export_model(second, target)
    assert not (target / "stale.txt").exists()
    assert load_model(target).kind == "ce"
    assert sorted(p.name for p in target.parent.iterdir()) == ["teacher"]
    # the CE's own head travels with the export
    reloaded = load_model(target)
    for name, tensor in second.head_state_dict().items():
        torch.testing.assert_close(reloaded.head_state_dict()[name], tensor)


def test_non_main_rank_writes_nothing_and_bad_inputs_are_named(tiny_bert_dir: Path, tmp_path: Path) -> None:
    model = load_model(tiny_bert_dir, kind="de")
    assert export_model(model, tmp_path / "rank1", is_main=False) == tmp_path / "rank1"
    assert not (tmp_path / "rank1").exists()
    with pytest.raises(TypeError, match="Linear has no save\\(path\\)"):
        export_model(torch.nn.Linear(2, 2), tmp_path / "x")
    with pytest.raises(ValueError, match="export role must be one of"):
        export_dir(tmp_path, "teachers")
