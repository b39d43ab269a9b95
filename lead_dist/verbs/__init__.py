"""Thin command-line entry modules, one per `lead-dist` verb: `add_arguments(parser)` and `run(args) -> int`."""
