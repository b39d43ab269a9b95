"""The `lead-dist` verbs, one thin module each: prepare, split, train, encode, search, evaluate, rerank, mine, demo.

Every module exposes `add_arguments(parser: argparse.ArgumentParser) -> None` and `run(args) -> int`; `cli.py`
imports a module only when its verb runs. A verb parses its flags, checks its inputs and its outputs against them
(`lead_dist.guard`, before writing a byte), and calls library functions; bad input raises, and `cli.py` alone turns
it into one line and exit code 2 (with the traceback under --debug). The library functions
(`lead_dist.data.prepare.prepare`, `lead_dist.train.loop.train`, `lead_dist.retrieval.*`) hold no argparse and print
no usage.
`common.py` holds the flags the retrieval verbs share.
"""
