"""The `cmr-bench` command. Each subcommand lives in its own module in cmr_bench.commands
and exposes `register(subparsers)`; this file only wires them and turns CmrBenchError into
one line on stderr with exit code 2."""

import argparse
import importlib
import os
import pkgutil
import sys

from cmr_bench import __version__
from cmr_bench.errors import CmrBenchError


class OneLineParser(argparse.ArgumentParser):
    """argparse errors as one line on stderr and exit code 2 (no usage dump); subparsers
    inherit the class, so every subcommand behaves the same."""

    def error(self, message: str):
        sys.stderr.write(f"cmr-bench: error: {self.prog.replace('cmr-bench', '', 1).strip() + ': ' if self.prog != 'cmr-bench' else ''}"
                         f"{message} (see {self.prog} --help)\n")
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="cmr-bench",
        description="Reproducible benchmarks for cross-modal retrieval and cross-modal hashing.",
    )
    parser.add_argument("--version", action="version", version=f"cmr-bench {__version__}")
    parser.add_argument(
        "--data-root",
        default=None,
        help="folder holding one folder per dataset (default: $CMR_BENCH_DATA, else the user data dir)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    import cmr_bench.commands as commands

    modules = [importlib.import_module(f"cmr_bench.commands.{m.name}") for m in pkgutil.iter_modules(commands.__path__) if not m.name.startswith("_")]
    for module in sorted(modules, key=lambda m: getattr(m, "ORDER", 100)):
        module.register(sub)
    return parser


# Folder and file options made absolute once, at start: a plugin that calls os.chdir() in fit
# must not move the store, the tuned configs or the outputs.
PATH_OPTIONS = ("results_dir", "out", "tuned_dir", "data_root")


def absolute_paths(args) -> None:
    for attr in PATH_OPTIONS:
        value = getattr(args, attr, None)
        if isinstance(value, (str, os.PathLike)) and str(value):
            value = os.path.expanduser(os.fspath(value))
            # joined, not normalised: `D/x/..` stays visibly a parent (features extract refuses it)
            setattr(args, attr, value if os.path.isabs(value) else os.path.join(os.getcwd(), value))


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    absolute_paths(args)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 0
    try:
        code = args.handler(args)
    except CmrBenchError as exc:
        print(f"cmr-bench: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:  # `cmr-bench ... | head`
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("cmr-bench: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:  # a path the OS refuses (name too long, permissions, ...) that no check caught
        where = f": {exc.filename}" if getattr(exc, "filename", None) else ""
        print(f"cmr-bench: error: {exc.strerror or exc}{where[:200]}", file=sys.stderr)
        return 2
    except (MemoryError, RecursionError) as exc:  # input too large or too deep for a check we lack: still one line
        what = "out of memory" if isinstance(exc, MemoryError) else "input nested too deep"
        print(f"cmr-bench: error: {what} ({type(exc).__name__}); finished results are kept", file=sys.stderr)
        return 2
    return int(code or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
