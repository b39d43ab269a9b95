"""What `train` checks before it builds a model or writes a byte: the inputs the config names exist and are what
they should be. A missing manifest used to surface after ~10 s of model loading, leaving an empty output_dir.

Every check names the config key. Remote inputs (URLs, pipe: commands, hub ids) are left to their readers, which
name them too; local ones are checked here on every rank (file tests only, no collective).
"""

from __future__ import annotations

from pathlib import Path

from lead_dist.config import Config, ModelConfig
from lead_dist.data.errors import ShardError
from lead_dist.errors import UsageError
from lead_dist.models.families import DEFAULT_MODEL_TYPE, FAMILIES, unsupported_type
from lead_dist.models.folder import check_model_folder, looks_local, packaged_copy


def _check_section(name: str, section: ModelConfig | None) -> None:
    if section is None:
        return
    if section.path is not None:
        check_model_folder(f"{name}.path", section.path)
    if section.config is not None:  # a model built from a config: the backbone family must be one lead_dist has
        model_type = section.config.get("model_type", DEFAULT_MODEL_TYPE)
        if model_type not in FAMILIES:
            raise UsageError(f"{name}.config.model_type: {unsupported_type(model_type)}")
    if section.tokenizer is not None:
        text = section.tokenizer
        if packaged_copy(text) is None and looks_local(text) and not Path(text).expanduser().is_dir():
            raise UsageError(f"{name}.tokenizer: {text} does not exist (or is not a folder)")


def check_inputs(config: Config) -> None:
    """Raise UsageError (or ShardError) naming the first config key whose input is missing or malformed."""
    from lead_dist.data.location import parse_location
    from lead_dist.data.manifest import read_manifest

    location = parse_location(config.data.train, config.data.manifest)
    if location.kind == "local" and config.data.manifest is None:
        try:
            read_manifest(location.text)
        except ShardError as error:
            raise UsageError(f"data.train: {error}") from None
    for name in ("model", "teacher", "student"):
        _check_section(name, getattr(config, name))
    cache = config.teacher.cache if config.teacher is not None else None
    if cache is not None and not Path(cache).is_dir():
        raise UsageError(
            f"teacher.cache: {cache} is not a folder; build it with `lead-dist cache-teacher CONFIG --out DIR`"
        )
    if config.train.eval_every > 0 and config.data.dev is not None:
        qrels = Path(config.data.dev) / "qrels" / f"{config.data.dev_split}.tsv"
        if not qrels.is_file():
            raise UsageError(f"data.dev: {qrels} does not exist (data.dev_split={config.data.dev_split!r})")
