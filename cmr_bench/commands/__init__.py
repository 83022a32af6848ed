"""CLI subcommands: one module each, with `ORDER` (help order) and `register(subparsers)`.
A registered parser sets `handler=func(args) -> exit code`."""
