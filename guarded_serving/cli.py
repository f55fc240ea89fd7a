"""The ``guarded-serving`` command line (also ``python -m guarded_serving``).

Each capability adds its subcommands from its own package: a module with an
``add_subparser(subparsers)`` function that calls ``subparsers.add_parser(...)``
and sets ``func=`` (a function taking the parsed ``argparse.Namespace`` and
returning an exit status) with ``set_defaults``. List that module in
``COMMAND_MODULES``; it is imported only when the parser is built.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

from ._version import __version__

__all__ = ["COMMAND_MODULES", "build_parser", "main"]

#: Modules providing ``add_subparser(subparsers)``, one per capability.
COMMAND_MODULES: tuple[str, ...] = (
    "guarded_serving.integrity.cli",  # manifest create|verify, keygen
    "guarded_serving.edge_cases.cli",  # profile
    "guarded_serving.report",  # report
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="guarded-serving",
                                     description="Tools for guarded model serving.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_subparser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns (and, as a console script, exits with) its status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return 2
    return int(func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
