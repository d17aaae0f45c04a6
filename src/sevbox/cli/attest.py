"""``sevbox attest SUB-VERB``: dispatch to the module that owns each sub-verb (imported lazily).

Each owning module provides ``configure(sub_verb, parser)`` like a top-level verb module.
"""

from __future__ import annotations

import argparse
import importlib

from sevbox.cli import VERBS

__all__ = ["OWNERS", "configure"]

OWNERS: dict[str, str] = {
    "verify-chain": "sevbox.cli.attest_sev",
    "session": "sevbox.cli.attest_sev",
    "policy": "sevbox.cli.attest_sev",
    "secret": "sevbox.cli.attest_sev",
    "sev-report": "sevbox.cli.attest_sev",
    "measure": "sevbox.cli.attest_measure",
    "validate": "sevbox.cli.attest_measure",
    "id-block": "sevbox.cli.attest_measure",
    "report": "sevbox.cli.attest_snp",
    "fetch": "sevbox.cli.attest_snp",
    "expected": "sevbox.cli.attest_runtime",
    "measurement": "sevbox.cli.attest_runtime",
    "inject": "sevbox.cli.attest_runtime",
}


def configure(verb: str, parser: argparse.ArgumentParser) -> None:
    from sevbox.cli import ARGV, Parser, _Formatter, _unavailable, sub_verb

    chosen = sub_verb(ARGV, verb)

    parser.set_defaults(subparser=parser)
    sub = parser.add_subparsers(dest="attest_verb", metavar="SUB-COMMAND", parser_class=Parser)
    for name, help_ in VERBS[verb][2]:
        p = sub.add_parser(name, help=help_, description=help_, formatter_class=_Formatter)
        module = OWNERS[name]
        if name != chosen:  # only the sub-verb being run pays for its imports
            continue
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as err:
            if err.name != module:
                raise
            p.set_defaults(handler=_unavailable(f"attest {name}"))
            p.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
        else:
            mod.configure(name, p)
