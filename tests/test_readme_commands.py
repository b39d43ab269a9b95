"""Every `lead-dist` command shown in the project's READMEs parses (issue 15, section 3): the verb exists, its flags
are the verb's, and for `train` the config loads with the overrides shown (every key exists, values validate).

Commands are taken from indented or fenced code blocks: lines that run `lead-dist VERB` or `-m lead_dist.cli VERB`,
with backslash continuations joined and trailing `# comments` dropped. Paths need not exist: only parsing is
checked here (the verbs themselves are tested elsewhere), except that `train`'s config file must exist.
"""

from __future__ import annotations

import argparse
import importlib
import re
import shlex
from pathlib import Path

import pytest

from lead_dist.cli import VERBS

REPO = Path(__file__).resolve().parent.parent
READMES = sorted(p for p in REPO.rglob("README.md") if ".venv" not in p.parts and "node_modules" not in p.parts)
_COMMENT = re.compile(r"\s#\s|\s{2,}#")
_START = re.compile(r"(?:^|\s)(?:lead-dist|-m lead_dist\.cli)\s+(.*)$")


def readme_commands() -> list[tuple[str, int, list[str]]]:
    found = []
    for readme in READMES:
        lines = readme.read_text(encoding="utf-8").splitlines()
        index = 0
        while index < len(lines):
            line, number = lines[index], index + 1
            index += 1
            in_code = line.startswith("    ") or line.lstrip().startswith("$ ")
            code = _COMMENT.split(line)[0]  # a trailing comment may mention lead-dist too
            match = _START.search(code) if in_code and not line.lstrip().startswith("#") else None
            if match is None or "`" in code:
                continue
            text = match.group(1)
            while text.rstrip().endswith("\\") and index < len(lines):
                text = text.rstrip()[:-1] + " " + _COMMENT.split(lines[index])[0].strip()
                index += 1
            found.append((str(readme.relative_to(REPO)), number, shlex.split(text)))
    return found


COMMANDS = readme_commands()


def test_the_readmes_show_commands():
    assert len(COMMANDS) >= 10 and any(path == "README.md" for path, _n, _a in COMMANDS)


@pytest.mark.parametrize(("path", "line", "argv"), COMMANDS, ids=[f"{p}:{n}" for p, n, _a in COMMANDS])
def test_a_readme_command_parses(path, line, argv):
    where = f"{path}:{line}: lead-dist {' '.join(argv)}"
    if argv[0] in ("-h", "--help"):
        return
    assert argv[0] in VERBS, f"{where}: no verb {argv[0]!r}"
    parser = argparse.ArgumentParser(prog=f"lead-dist {argv[0]}", exit_on_error=False)
    importlib.import_module(VERBS[argv[0]][0]).add_arguments(parser)
    parser.add_argument("--debug", action="store_true")
    parser.add_argument("--verbose", action="store_true")
    try:
        args = parser.parse_args(argv[1:])
    except (argparse.ArgumentError, SystemExit) as error:
        pytest.fail(f"{where}: {error}")
    if argv[0] == "train":
        from lead_dist.config import ConfigError, load_config

        config = REPO / args.config
        assert config.is_file(), f"{where}: no config {args.config}"
        try:
            load_config(config, args.overrides)
        except ConfigError as error:
            pytest.fail(f"{where}: {error}")


def test_a_wrong_key_in_a_readme_would_be_caught(tmp_path):
    """The check above is not vacuous: the README's old `train.lr` override is refused by load_config."""
    from lead_dist.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="train.lr"):
        load_config(REPO / "configs/scifact/lead_de.yaml", ["train.lr=3e-5"])
