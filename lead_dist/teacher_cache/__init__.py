"""Per-layer teacher caches: a frozen teacher runs once (`lead-dist cache-teacher`), training reads it back.

    plan.py         what is cached: every query / passage (DE, ColBERT) or pair (cross encoder) training can draw
    encode.py       the teacher's outputs of every layer, batch by batch
    format.py       the folder: safetensors shards in fp16 / bf16, manifest.json written last
    fingerprint.py  what the cache was computed from; the field that differs is named when it is refused
    build.py        the build: per-rank shares, resume after a kill, the size estimate and its limit
    read.py         `CachedTeacher`: the teacher as training sees it with `teacher.cache: DIR`

When it pays off and what it costs: lead_dist/train/README.md, "Teacher caches".
"""
