"""The on-disk prepare writes exactly what the in-memory prepare wrote: the sha256 of every output file, for
SciFact, the demo data and small inputs that hit every drop and filter rule, was computed with the in-memory code
(commit 3063504, before the store existed) and is compared here file by file.

The manifest names the input and output folders, so its paths are replaced by placeholders before hashing.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pytest
from test_data_fixtures import run_prepare, write_beir

SCIFACT = Path(__file__).resolve().parents[2] / "shared" / "data" / "scifact"


def output_digests(out: Path, replacements: dict[str, str]) -> dict[str, str]:
    """sha256 of every file under `out` (relative name -> hex); manifest.json with its paths made relative. The
    folder markers (lead_dist.guard.MARKER: who wrote the folder, not data) are left out."""
    from lead_dist.guard import MARKER

    digests = {}
    for path in sorted(p for p in out.rglob("*") if p.is_file() and p.name != MARKER):
        data = path.read_bytes()
        if path.name == "manifest.json":
            text = data.decode("utf-8")
            for real, placeholder in replacements.items():
                text = text.replace(real, placeholder)
            data = text.encode("utf-8")
        digests[str(path.relative_to(out))] = hashlib.sha256(data).hexdigest()
    return digests


def scifact_test_run(path: Path) -> Path:
    """A TREC run for SciFact's test queries, made by a formula over the corpus order: 40 lines per query with
    scores that tie, the query's own positives, ids missing from the corpus and repeated ids."""
    corpus_ids = [json.loads(line)["_id"] for line in (SCIFACT / "corpus.jsonl").read_text().splitlines()]
    rows = [line.split("\t") for line in (SCIFACT / "qrels" / "test.tsv").read_text().splitlines()[1:]]
    positives: dict[str, list[str]] = {}
    for qid, pid, _score in rows:
        positives.setdefault(qid, []).append(pid)
    lines = []
    for number, (qid, own) in enumerate(positives.items()):
        docs = [corpus_ids[(number * 97 + 13 * k) % len(corpus_ids)] for k in range(36)]
        docs[3:3] = own[:1]  # a positive inside the depth range: removed later
        docs[9:9] = [f"missing-{number % 5}", docs[5], docs[7]]  # unknown id and two repeats, inside the depth
        for rank, doc in enumerate(docs, start=1):
            lines.append(f"{qid} Q0 {doc} {rank} {100 - (rank // 2):.1f} formula")  # pairs of equal scores
    path.write_text("\n".join(lines) + "\n")
    return path


def messy_beir(folder: Path) -> Path:
    """A BEIR folder with every kind of drop and filter, and its TREC run; returns the run file."""
    (folder / "qrels").mkdir(parents=True)
    passages = [{"_id": f"d{i}", "title": f"title {i % 7}", "text": f"text {i} é {'x' * (i % 11)}"} for i in range(60)]
    passages[10] = {"_id": "d10", "title": "", "text": "  "}  # empty: dropped
    passages.insert(20, {"_id": "d3", "title": "again", "text": "duplicate id"})  # duplicate: first kept
    passages.append({"_id": "d10", "title": "late", "text": "the id of an empty passage, now with text"})
    passages.append({"_id": 77, "text": "numeric id, no title"})
    queries = [{"_id": f"q{i}", "text": f"question {i} ü"} for i in range(30)]
    queries[4]["text"] = ""  # empty: dropped
    queries.append({"_id": "q4", "text": "after an empty one: still a duplicate"})
    queries.append({"_id": "q7", "text": "duplicate"})
    with (folder / "corpus.jsonl").open("w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(p, ensure_ascii=False) + "\n" for p in passages)
    with (folder / "queries.jsonl").open("w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(q, ensure_ascii=False) + "\n" for q in queries)
    qrels = ["query-id\tcorpus-id\tscore"]
    for i in range(30):
        qrels += [f"q{i}\td{(i * 3) % 60}\t{1 + i % 2}", f"q{i}\td{(i * 3 + 1) % 60}\t{i % 3}"]
    qrels += ["q4\td1\t1", "q99\td1\t1", "q1\td404\t1", "q2\td6\t1", "q5\t77\t2", "q6\td10\t1"]
    (folder / "qrels" / "train.tsv").write_text("\n".join(qrels) + "\n")
    run = folder / "run.trec"
    lines = []
    for i in list(range(30)) + [55]:  # q55 has no positive
        if 20 <= i < 23:  # only the positive and an unknown id: no negative left
            lines += [f"q{i} Q0 d{(i * 3) % 60} 1 9 run", f"q{i} Q0 d404 2 8 run", f"q{i} Q0 d{i * 3} 3 7 run"]
            continue
        for rank in range(1, 14):
            doc = "d404" if rank == 6 else f"d{(i * 3 + rank * 5) % 62}"
            lines.append(f"q{i} Q0 {doc} {rank} {20 - rank} run")
        lines.append(f"q{i} Q0 d{(i * 3) % 60} 14 {20 - 2.5} run")  # its positive, tied inside the depth
    run.write_text("\n".join(lines) + "\n")
    return run


def msmarco_files(folder: Path) -> None:
    folder.mkdir(parents=True)
    collection = [f"{i}\tpassage {i} {'y' * (i % 5)}" for i in range(40)] + ["3\tduplicate", "41\t "]
    (folder / "collection.tsv").write_text("\n".join(collection) + "\n")
    (folder / "queries.train.tsv").write_text("".join(f"{100 + i}\tquery {i}\n" for i in range(12)) + "100\tdup\n")
    qrels = [f"{100 + i} 0 {i * 3} 1" for i in range(12)] + ["100 0 1 1", "999 0 1 1", "101 0 41 1", "102 0 6 1"]
    (folder / "qrels.train.tsv").write_text("\n".join(qrels) + "\n")
    triples = [f"{100 + i}\t{(i * 3 + k) % 40}\t{(i * 7 + k * 11) % 45}" for i in range(12) for k in range(3)]
    (folder / "triples.tsv").write_text("\n".join(triples + triples[3:9] + ["120\t1\t2"]) + "\n")
    lists = [
        f"{100 + i}\t" + ",".join([str((i * 5 + k * 3) % 44) for k in range(i % 6)] + ["7", "7"]) for i in range(12)
    ]
    (folder / "lists.tsv").write_text("\n".join(lists) + "\n")


def reference_files(folder: Path) -> None:
    folder.mkdir(parents=True)
    (folder / "psgs.tsv").write_text("id\ttext\ttitle\n" + "".join(f"{i}\ttext {i}\tT{i % 4}\n" for i in range(1, 25)))
    items = [
        {
            "question": f"q {i}",
            "positive_ctxs": [i % 20, (i + 1) % 20],
            "hard_negative_ctxs": [(i * 7 + k) % 30 for k in range(5)],
        }
        for i in range(15)
    ]
    (folder / "train.json").write_text(json.dumps(items))


def case_arguments(name: str, root: Path) -> list:
    """The prepare command line of each case (inputs written under root/in, output at root/out)."""
    src, out = root / "in", root / "out"
    if name == "scifact-train":
        return ["--format", "beir", "--input", SCIFACT, "--split", "train", "--out", out, "--corpus-shard-size", "2000"]
    if name == "scifact-test-run":
        run = scifact_test_run(root / "run.trec")
        return [
            "--format", "beir", "--input", SCIFACT, "--split", "test", "--out", out, "--negatives-run", run,
            "--depth", "2:30", "--shards", "5", "--seed", "3", "--no-corpus",
        ]  # fmt: skip
    if name == "demo":
        return ["--format", "demo", "--input", src, "--out", out, "--shards", "3"]
    if name in ("messy", "messy-keep"):
        run = messy_beir(src)
        extra = ["--keep-without-negatives", "--min-relevance", "2"] if name == "messy-keep" else []
        return [
            "--format", "beir", "--input", src, "--out", out, "--negatives-run", run, "--depth", "3:12",
            "--max-drop-share", "0.6", "--shards", "3", "--corpus-shard-size", "17", *extra,
        ]  # fmt: skip
    if name in ("msmarco-triples", "msmarco-lists"):
        msmarco_files(src)
        source = (
            ["--triples", src / "triples.tsv"] if name == "msmarco-triples" else ["--negative-lists", src / "lists.tsv"]
        )
        return ["--format", "msmarco", "--input", src, "--out", out, "--max-drop-share", "0.6", *source]
    if name == "reference":
        reference_files(src)
        return [
            "--format", "reference", "--input", src / "train.json", "--passages", src / "psgs.tsv", "--out", out,
            "--max-drop-share", "0.6",
        ]  # fmt: skip
    raise ValueError(name)


# Computed with the in-memory prepare (commit 3063504) on CPython 3.11.7; see the module docstring.
EXPECTED: dict[str, dict[str, str]] = {
    "scifact-train": {
        "corpus-000000.tar": "b8abd6377f41e73b80a00217052ef411df4a1f59a73868fdc280fb20d252331a",
        "corpus-000001.tar": "02362dd76e15db2eb59a7e3706cc0ce447aeec9447b9f1d9c9e2469dc8ba4340",
        "corpus-000002.tar": "689bfb0fbb3a909076d3e3a4c62c47112ae8d8e900fdccd6c94527865ab5291e",
        "manifest.json": "50fcb532b3193fc10fea232d97d8f2e257c3f27e4a1d0c2f1d39c0880e269906",
        "qrels.tsv": "ce506754ba276ece6b88e9dc2bba0f955e55d1fb2f0aad9f4436ffa160667269",
        "queries.jsonl": "b34f800107d8b58f014967fec77f886ba8fbffc47e6da485a08a3855a5a8289a",
        "train-000000.tar": "a1f88c099635e26378c7d9e1dfefb24beea98ca76e0b637f7107d7befe9a66d5",
        "train-000001.tar": "4f3ca647c29f2d205e4cc46ebbf7dd0047dbe6c738e444fe02b5eabb4b95f732",
        "train-000002.tar": "92f039432b28d030c306e3f77428f1f19f49473910a84241a819b7a8b5118454",
        "train-000003.tar": "17d5ecd1f0b47b528da0a427d6b817a542bf74cc0ac8aee6b5c257577e2347c1",
        "train-000004.tar": "572ed1b98e7ab879f21aaff6e34b8352df22dce28490e85a6e9ea7fb1ed45c95",
        "train-000005.tar": "30a095f0f0c9c5a4cdb8f82047935d5ea5aee675ffc579033542cd1a1a65ef13",
        "train-000006.tar": "70b24df10fb78a38814a54be380435a9a854849434b2e04683d77566ae763505",
        "train-000007.tar": "b64046eb0f191886b75bcceb8321fe4d21e2142e9d1a6d12131096e8c4522c21",
    },
    "scifact-test-run": {
        "manifest.json": "24b141c3a20d33896cbdfdcf2f996b69df742ebdd07bd2fed3e40e944bb81fea",
        "qrels.tsv": "68c0ac63f1c24b9e8ce497649694f09b2d0850bab7ec2b103cc66996f5f8b3a3",
        "queries.jsonl": "b3a87da17d18cba4f99921c4a7feaa60837b2027290962b97fe746a829c5b0ef",
        "train-000000.tar": "4aaa969872f1322130c86589ce44713c0d065c491f0ec179c719f1691c035fec",
        "train-000001.tar": "fadb0bfc6b4407d55185291244ae32d003230fbdcfc848e22ab55addf79f6983",
        "train-000002.tar": "374bad7659714292d6e23362035db7b18acc0c7b497def0cc136d23324b78f3c",
        "train-000003.tar": "b67e78f7574a75d9a8319639d218eb2186c845570fff1e19cbcf2b9b38e532cf",
        "train-000004.tar": "6a2123e40183158e365283da865432643416c08602467c55a11dbe7427730d63",
    },
    "demo": {
        "corpus-000000.tar": "8ccab2e94775b3cabe7ab6e5a260cdddd65b9ceb5270301df10f20c6919fa9bd",
        "manifest.json": "49951cfb288f337ea45b9a82245f85deeb9c844d3c178384786adfafdb4df312",
        "qrels.tsv": "d3c243ad04b34f86381de5f811bb287d2e4f050a7509c2c32e427bb9fdef4ab4",
        "queries.jsonl": "87e58a4503e4d3dac77ca254852ad929d323e5b604ef51400c5cc35551390924",
        "train-000000.tar": "72bd80d77624ad8e980648309021af24cb671bcc2ebec050c5401787c7b3a1a0",
        "train-000001.tar": "98ae4c4f8548b38f757e6857cda13a88186f7becb815756407efc596c562e937",
        "train-000002.tar": "899bf5b14c6f58439b568fd7d635c53ef7fe7b94bbcf86e768747d140f463318",
    },
    "messy": {
        "corpus-000000.tar": "181a812c912d61aa08fcdbd02e1f75be9d0d931c89a887f6727388278ffac9ca",
        "corpus-000001.tar": "8f4ed2cb38e59d768d96d3d95d40d1e4c77ce8703195ca63429d527cd6c437b0",
        "corpus-000002.tar": "6cf32e09b4bb2d421b21c67f07fc791700170cd64b8911b9b3865a4c6a182eed",
        "corpus-000003.tar": "048d4cfa62ef1dbb9595c29dc28d8ce6a2106a834aed07559faf4974f26c5825",
        "manifest.json": "156efdd6850832c31c618f992e689a933ca1344b749c4e3672f6bc6e7210b718",
        "qrels.tsv": "ed3514162e7e807947e396cff170f327ccdd39a87bbe1bb07504a2eb71e1077e",
        "queries.jsonl": "c2d2ffa0b8c351b9ea868275f33fa805166b4bb46de7954f1c24fb41b816fc00",
        "train-000000.tar": "008836e1bdffcfc530df3131f0cd887adebdb9af3c97e69650776f99fad5ba29",
        "train-000001.tar": "3620c59ed3430e818373ed8e46810c1e725bd3ab9e274a2c6599b8ea17bd40e5",
        "train-000002.tar": "cf45b5dddf28c9756268bd39f5eaa0efdf7f55a7a0cad7310e5db1558ab52435",
    },
    "messy-keep": {
        "corpus-000000.tar": "181a812c912d61aa08fcdbd02e1f75be9d0d931c89a887f6727388278ffac9ca",
        "corpus-000001.tar": "8f4ed2cb38e59d768d96d3d95d40d1e4c77ce8703195ca63429d527cd6c437b0",
        "corpus-000002.tar": "6cf32e09b4bb2d421b21c67f07fc791700170cd64b8911b9b3865a4c6a182eed",
        "corpus-000003.tar": "048d4cfa62ef1dbb9595c29dc28d8ce6a2106a834aed07559faf4974f26c5825",
        "manifest.json": "dd932986eb04e8df179388465b5b207f6d632d3a4111f48e3a6b66d9ac4a2a1f",
        "qrels.tsv": "ed3514162e7e807947e396cff170f327ccdd39a87bbe1bb07504a2eb71e1077e",
        "queries.jsonl": "c2d2ffa0b8c351b9ea868275f33fa805166b4bb46de7954f1c24fb41b816fc00",
        "train-000000.tar": "001671ae6d926771f0e1504a13f3228d0705b07c9b55c69aa876e8d89c40093f",
        "train-000001.tar": "d2ab389e3aec5d56038c700ea7bb3436266eb3f5eb1705fd02444d9202f6cf08",
        "train-000002.tar": "4048146ef8ff3c674b67d2769814282da62890e1111a57e641ff136ab6e07850",
    },
    "msmarco-triples": {
        "corpus-000000.tar": "5428461f71c1ebe0f3f85373f17e99bf7bdf7eb77f55e68814c11feaa38c134c",
        "manifest.json": "f294684113045733d680334e42af1b682df5426e74772c61c22e0d1fe291c290",
        "qrels.tsv": "88ebecaca81b9960d9dae25ca1e248e473e105a0aad7c2f245d8fa1e4ef68f89",
        "queries.jsonl": "6c8adb0467f72802433b63f0f3efe9cf094ddb9d97698168e3046bc596fa14e2",
        "train-000000.tar": "31d25fae643b4d085ed7aea8b835041e6e59b9a0ce38b5232c1874c3e8f72dfd",
        "train-000001.tar": "cc8b170d65ea39384e8e41d407784a9edf59c28bde53f12be20112cd7f3f82e5",
        "train-000002.tar": "45443d788b8115515c39e32c01800c013101e52d7e05823d096bcdfa01d063f2",
        "train-000003.tar": "4a1360ddb6ab64921b18462017bb0b7acaa3013d50f00f1cee63ae7effa1159d",
        "train-000004.tar": "53c7d3ad9b3f69325d7f0033d300dd2b882dc1b456e67065b0f94f9b4f48e1c4",
        "train-000005.tar": "7e5848aa99d2ce9dbadaba109f5b32791925b2fb9d8107e84aaa7505eb3d94fc",
        "train-000006.tar": "7bb063418290f90d5b40898772eabaf27590caaa4465c2dcc2917cc001ce67b2",
        "train-000007.tar": "41fe2daabf1e7a3f540e77513b0b35de803f6af224f781d8a6875eb8e9043444",
    },
    "msmarco-lists": {
        "corpus-000000.tar": "5428461f71c1ebe0f3f85373f17e99bf7bdf7eb77f55e68814c11feaa38c134c",
        "manifest.json": "adcccb887fc64da276b64bb042d1aae2f161f59630f7132dd59cd71e7bbb1bfe",
        "qrels.tsv": "222e610288803aafce106dde2e45d7d2a680a5e7c8d4c18349fcd3f690478e10",
        "queries.jsonl": "6c8adb0467f72802433b63f0f3efe9cf094ddb9d97698168e3046bc596fa14e2",
        "train-000000.tar": "e74ec6c6332716d1d1b51fb631e127a6a583cf48ae70acd00193c7a51020acb3",
        "train-000001.tar": "6bc7ac82b16961655b5e535a4f5429a2ae35cc68ec02ee69de3a42d888e2fccc",
        "train-000002.tar": "5513cdd33377ab7118f9b1ed8e648bbaa6e0a063365e77905e94c8212e358d65",
        "train-000003.tar": "514ffbccf474cee7ed3b1ff592994158b67619c1f2b30120c133f45a4ba21180",
        "train-000004.tar": "8a8491c3b35fa9ab307bfa0d3171288fb0bec0ddad54faca334dcca2de88c9c1",
        "train-000005.tar": "bfff72c3547c8e460360d4cc0472ce7fe6f738e083b6fef1d52ceda5ceefe3ef",
        "train-000006.tar": "d94e39aea6bd611bbfead571c59d1a52b75032e6bfa249303c835e0306bc50b3",
        "train-000007.tar": "b9823f882c4e58e0408bd28ebe7ad7c8cdd3effc46a6c4609e79fbdedc03cb31",
    },
    "reference": {
        "corpus-000000.tar": "711b853b99c8510b02dc02ec15ba4e2643b2395092f63ca3c58b391899f9874f",
        "manifest.json": "6fd36b293b3d9437f02a22c5e4a4cf1f498a91481b28cb9497cc42f5fad8c982",
        "qrels.tsv": "6f5a214810c511b35188a0d1637dcc2c8b7b96a0a238b3f39f6d90c5c75d77f8",
        "queries.jsonl": "aa49869bd9b9728d42064a85037b012b6c2567b665e4f48aec2f0ef3da869a5b",
        "train-000000.tar": "7de05087ac0065943fc0d2a6db43f3c8fd047dcd05f7c865b03988998e61772a",
        "train-000001.tar": "f661e41090f5681745db37d6231487df4fcdb206208ede16c618155c20456ad3",
        "train-000002.tar": "69a572bf674c0cf237b8fc6e79358d135325d7550a3c8fd9a917692dbd774e49",
        "train-000003.tar": "74acf88e5eb650f859366c79fcfb62f173224632a7dc7316b0528a9d2dc150f6",
        "train-000004.tar": "60c022b45844b287714e364349c7e75f088f4ae1ea142da13fe34f155efb1dcb",
        "train-000005.tar": "9e71f2d51ad1269e1e50a30c7a64b041d6879f86dab4c3456074a3dda9af0301",
        "train-000006.tar": "e0636692688772fa6436b9d20c3a24fe129f0ba85e28b6147d95e12edf36304b",
        "train-000007.tar": "200902034a9759163ee6e9e74080aaf3a16d38eed1fe1a86005af542b4765d0a",
    },
}  # fmt: skip
DEMO_SOURCE_SHA256 = "467d3ab5006afba8ffc3b1fb938ab0c41c1b9c38fedbae9a6cca48dc19675d86"
CASES = (
    "scifact-train",
    "scifact-test-run",
    "demo",
    "messy",
    "messy-keep",
    "msmarco-triples",
    "msmarco-lists",
    "reference",
)


def demo_source_digest(folder: Path) -> str:
    """One sha256 over the demo's BEIR files: they depend on the Python version (see demo_dataset.py)."""
    digest = hashlib.sha256()
    for name in ("corpus.jsonl", "queries.jsonl", "qrels/train.tsv", "qrels/test.tsv"):
        digest.update((folder / name).read_bytes())
    return digest.hexdigest()


def prepared_digests(name: str, root: Path) -> dict[str, str]:
    root.mkdir(parents=True, exist_ok=True)
    run_prepare(*case_arguments(name, root))
    return output_digests(root / "out", {str(root): "<ROOT>", str(SCIFACT): "<SCIFACT>"})


@pytest.mark.parametrize("name", CASES)
def test_prepare_output_is_byte_identical_to_the_in_memory_prepare(name: str, tmp_path: Path) -> None:
    if name.startswith("scifact") and not SCIFACT.is_dir():
        pytest.skip("SciFact is not at ../shared/data/scifact on this machine")
    got = prepared_digests(name, tmp_path)
    if name == "demo" and demo_source_digest(tmp_path / "in") != DEMO_SOURCE_SHA256:
        pytest.skip(f"the demo data differs on Python {sys.version.split()[0]} (the digests are for 3.11.7)")
    assert got == EXPECTED[name]


def test_the_store_lives_beside_the_output_and_is_removed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lead_dist.data import prepare as prepare_module
    from lead_dist.data.errors import DropShareExceeded

    opened: list[Path] = []

    class Recorded(prepare_module.PrepareStore):
        def __init__(self, path: Path) -> None:
            opened.append(Path(path))
            super().__init__(path)

    monkeypatch.setattr(prepare_module, "PrepareStore", Recorded)
    write_beir(tmp_path / "src", num_queries=5, num_passages=5)
    run_prepare("--format", "beir", "--input", tmp_path / "src", "--out", tmp_path / "out")
    assert opened[0].parent.parent == tmp_path and opened[0].parent.name.startswith(".out.prepare-")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "src"]  # the scratch folder is gone
    with (tmp_path / "src" / "qrels" / "train.tsv").open("a") as handle:
        handle.write("q0\tp404\t1\nq1\tp404\t1\n")  # 2 of 7 judgements dropped: over the 5% default
    with pytest.raises(DropShareExceeded):
        run_prepare("--format", "beir", "--input", tmp_path / "src", "--out", tmp_path / "failed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "src"]  # neither output nor scratch left


if __name__ == "__main__":  # print the expected digests of the code at hand: python tests/test_data_prepare_store.py
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        digests = {name: prepared_digests(name, Path(tmp) / name) for name in CASES}
        print(json.dumps(digests, indent=1))
        print(demo_source_digest(Path(tmp) / "demo" / "in"))
    sys.exit(0)
