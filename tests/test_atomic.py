"""Write-to-temp-then-rename (lead_dist.atomic): all or nothing, old content kept on error, no temporary left."""

from __future__ import annotations

from pathlib import Path

import pytest

from lead_dist.atomic import atomic_open, atomic_write_text, replace_dir, temp_path


def test_a_failed_write_keeps_the_old_file_and_leaves_nothing_behind(tmp_path: Path) -> None:
    target = tmp_path / "run.trec"
    atomic_write_text(target, "old\n")
    with pytest.raises(RuntimeError, match="killed mid-write"):
        with atomic_open(target, "w") as handle:
            handle.write("half of the new")
            raise RuntimeError("killed mid-write")
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.trec"]
    with atomic_open(target, "wb") as handle:
        handle.write(b"new\n")
        assert target.read_text() == "old\n"  # nothing visible under the name before the rename
    assert target.read_text() == "new\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.trec"]


def test_temporary_names_differ_per_writer(tmp_path: Path) -> None:
    names = {temp_path(tmp_path / "manifest.json").name for _ in range(50)}
    assert len(names) == 50 and all(n.startswith("manifest.json.") and n.endswith(".tmp") for n in names)


def test_replace_dir_swaps_whole_folders(tmp_path: Path) -> None:
    final, new = tmp_path / "export", tmp_path / ".export.tmp"
    new.mkdir()
    (new / "a").write_text("1")
    replace_dir(new, final)  # nothing there yet
    second = tmp_path / ".export.tmp2"
    second.mkdir()
    (second / "b").write_text("2")
    replace_dir(second, final, retired=tmp_path / "retired")
    assert sorted(p.name for p in final.iterdir()) == ["b"]  # the old folder's files are gone, not merged
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]
