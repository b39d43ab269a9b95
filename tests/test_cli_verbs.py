"""One pattern for a verb's command line: a thin module per verb under lead_dist/verbs/, lazily imported."""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from lead_dist.cli import VERBS

PACKAGE = Path(__file__).resolve().parents[1] / "lead_dist"


@pytest.mark.parametrize("verb", sorted(VERBS))
def test_every_verb_is_a_module_under_verbs_with_add_arguments_and_run(verb: str) -> None:
    module_name, _help = VERBS[verb]
    assert module_name == f"lead_dist.verbs.{verb.replace('-', '_')}"  # cache-teacher: cache_teacher.py
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(prog=f"lead-dist {verb}")
    module.add_arguments(parser)
    assert callable(module.run)
    with pytest.raises(SystemExit) as exit_info:  # --help prints the flags and exits 0
        parser.parse_args(["--help"])
    assert exit_info.value.code == 0


def test_library_modules_hold_no_argparse() -> None:
    parsers = [
        str(path.relative_to(PACKAGE))
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.parent.name != "verbs" and path.name != "cli.py"
        if "add_argument(" in path.read_text() or "ArgumentParser(" in path.read_text()
    ]
    assert parsers == []


def test_help_imports_no_verb_and_no_torch() -> None:
    code = (
        "import sys, contextlib, io\n"
        "from lead_dist.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()): main(['--help'])\n"
        "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('lead_dist.verbs.')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
