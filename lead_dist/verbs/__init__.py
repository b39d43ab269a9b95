"""The `lead-dist` verbs, one thin module each: prepare, split, train, encode, search, evaluate, rerank, mine, demo.

Every module exposes `add_arguments(parser: argparse.ArgumentParser) -> None` and `run(args) -> int`; `cli.py`
imports a module only when its verb runs. A verb parses its flags, checks its inputs (exit code 2 with one line for
bad input, where the verb already does so) and calls library functions (`lead_dist.data.prepare.prepare`,
`lead_dist.train.loop.train`, `lead_dist.retrieval.*`); library modules hold no argparse and print no usage.
`common.py` holds the flags the retrieval verbs share.
"""
