"""The ``sevbox`` command line: global flags, then one verb.

Each verb lives in a module under ``sevbox.cli`` that is imported only when that verb runs (the
runtime verbs are called often by containerd; start-up time matters). A verb module provides::

    def configure(verb: str, parser: argparse.ArgumentParser) -> None
        # add the verb's arguments and set_defaults(handler=fn), fn(args) -> int exit code
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from sevbox import __version__
from sevbox.cli import logsetup
from sevbox.errors import ExitCode, SevboxError, UsageError

__all__ = ["VERBS", "main"]

log = logging.getLogger("sevbox")

# verb -> (module, one-line help, sub-verbs with one-line help)
VERBS: dict[str, tuple[str, str, tuple[tuple[str, str], ...]]] = {
    # runc-compatible runtime verbs
    "create": ("sevbox.cli.runtime", "create a container: boot its VM, prepare its process", ()),
    "start": ("sevbox.cli.runtime", "start the process of a created container", ()),
    "run": ("sevbox.cli.run", "create and start a container, wait for it, exit with its status", ()),
    "state": ("sevbox.cli.runtime", "print a container's OCI state JSON", ()),
    "kill": ("sevbox.cli.runtime", "send a signal to a container's process (default TERM)", ()),
    "delete": ("sevbox.cli.runtime", "delete a stopped container (--force: any state)", ()),
    "exec": ("sevbox.cli.runtime", "run another process inside a running container", ()),
    "ps": ("sevbox.cli.runtime", "list the processes running inside a container", ()),
    "list": ("sevbox.cli.runtime", "list the containers under --root", ()),
    "pause": ("sevbox.cli.runtime", "pause a container (stops its VM's vCPUs)", ()),
    "resume": ("sevbox.cli.runtime", "resume a paused container", ()),
    "update": ("sevbox.cli.runtime", "update a container's resource limits", ()),
    "events": ("sevbox.cli.runtime", "print a container's events and stats as JSON", ()),
    "features": ("sevbox.cli.runtime", "print the runtime's features as JSON (runc's shape)", ()),
    "spec": ("sevbox.cli.runtime", "write a default config.json into a bundle", ()),
    # launch security, attestation and checks
    "attest": (
        "sevbox.cli.attest",
        "guest-owner attestation for SEV, SEV-ES and SEV-SNP",
        (
            ("verify-chain", "verify an SEV platform certificate chain (PDH back to AMD's ARK)"),
            ("session", "make a launch session blob and TEK/TIK for a PDH and policy"),
            ("policy", "decode, explain or encode an SEV or SNP guest policy"),
            ("measure", "compute the expected launch digest (SEV, SEV-ES, SNP)"),
            ("validate", "validate a reported launch measurement (virt-qemu-sev-validate)"),
            ("secret", "build a LAUNCH_SECRET header and payload"),
            ("sev-report", "parse and verify a legacy SEV attestation report"),
            ("id-block", "build and sign an SNP ID block and ID auth"),
            ("report", "show or verify an SNP attestation report"),
            ("fetch", "fetch AMD CA chains, VCEKs and CRLs from AMD's KDS"),
            ("expected", "expected measurement of what the runtime will launch"),
            ("measurement", "read a paused container's launch measurement (QMP)"),
            ("inject", "inject a launch secret into a paused container and resume it"),
        ),
    ),
    "check": ("sevbox.cli.check", "is this host ready for VMs, SEV, SEV-ES and SEV-SNP, and why not", ()),
    "guest-check": ("sevbox.cli.check", "is memory encryption active in this (guest) machine", ()),
    "verify-memory": (
        "sevbox.cli.verifymem",
        "look for a guest's canary in its QEMU's memory: is it really encrypted",
        (),
    ),
    "libvirt": (
        "sevbox.cli.libvirt",
        "libvirt domain XML for SEV guests",
        (
            ("xml", "print a libvirt domain XML for an SEV, SEV-ES or SNP guest"),
            ("lint", "check a domain XML against libvirt's SEV rules"),
        ),
    ),
    "ghcb": (
        "sevbox.cli.ghcb",
        "the SEV-ES GHCB protocol",
        (("decode", "explain a GHCB MSR value, an NAE event code or a GHCB page dump"),),
    ),
    "image": (
        "sevbox.cli.image",
        "the guest image (kernel + initramfs with the agent)",
        (("build", "build (or find in the cache) the guest image"), ("show", "print its paths")),
    ),
}

# Global flags that take a value (to find the verb before building the parser).
_VALUED_GLOBALS = {"--root", "--log", "--log-format", "--criu", "--rootless", "--config"}


class Parser(argparse.ArgumentParser):
    """argparse, but a bad command line raises UsageError (one line, exit 2) instead of exiting."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}", hint=f"see '{self.prog} --help'")


class _Formatter(argparse.RawDescriptionHelpFormatter):
    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=32, width=100)


def _overview() -> str:
    lines = ["commands:"]
    for verb, (_, help_, subs) in VERBS.items():
        if verb == "attest":
            lines.append("")
        lines.append(f"  {verb:<16}{help_}")
        for sub, sub_help in subs:
            lines.append(f"    {sub:<14}{sub_help}")
    lines += [
        "",
        "exit codes: 0 ok, 1 error (message on stderr), 2 usage error; 'run' exits with the",
        "container's status (128+N when killed by signal N). 'sevbox VERB --help' for each verb.",
    ]
    return "\n".join(lines)


def _find_verb(argv: Sequence[str]) -> str | None:
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--":
            return argv[i + 1] if i + 1 < len(argv) else None
        if not a.startswith("-"):
            return a
        if a in _VALUED_GLOBALS:
            i += 1
        i += 1
    return None


def _unavailable(verb: str) -> Callable[[argparse.Namespace], int]:
    def handler(args: argparse.Namespace) -> int:
        raise SevboxError(f"'{verb}' is not available in this build of sevbox")

    return handler


def sub_verb(argv: Sequence[str], verb: str) -> str | None:
    """The first non-option word after ``verb`` (group verbs use it to configure only that one)."""
    rest = list(argv)
    if verb in rest:
        rest = rest[rest.index(verb) + 1 :]
    return next((a for a in rest if not a.startswith("-")), None)


ARGV: list[str] = []  # the command line being parsed (set by main)


def build_parser(verb: str | None) -> Parser:
    parser = Parser(
        prog="sevbox",
        description="Run OCI containers in AMD SEV-encrypted micro-VMs, and prove it.",
        epilog=_overview(),
        formatter_class=_Formatter,
        usage="sevbox [global flags] COMMAND [ARGS...]",
    )
    parser.add_argument(
        "--version", "-v", action="version", version=f"sevbox version {__version__}\nspec: 1.2.0"
    )
    parser.add_argument(
        "--root",
        default=os.environ.get("SEVBOX_ROOT", "/run/sevbox"),
        help="directory holding containers' state (default /run/sevbox)",
    )
    parser.add_argument("--log", metavar="FILE", help="also write log messages to FILE")
    parser.add_argument(
        "--log-format", choices=("text", "json"), default="text", help="format of --log (text|json)"
    )
    parser.add_argument("--debug", action="store_true", help="log debug messages")
    parser.add_argument("--systemd-cgroup", action="store_true", help="accepted for runc compatibility")
    parser.add_argument(
        "--config", metavar="FILE", help="sevbox config file (default /etc/sevbox/config.toml)"
    )
    parser.add_argument("--criu", metavar="PATH", help=argparse.SUPPRESS)
    parser.add_argument("--rootless", metavar="VALUE", help=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="verb", metavar="COMMAND", parser_class=Parser, prog="sevbox")
    for name, (module, help_, _) in VERBS.items():
        p = sub.add_parser(name, help=help_, description=help_, formatter_class=_Formatter)
        if name == verb:
            try:
                mod = importlib.import_module(module)
            except ModuleNotFoundError as err:
                if err.name != module:
                    raise
                p.set_defaults(handler=_unavailable(name))
                p.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
            else:
                mod.configure(name, p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args_list
    logsetup.early()
    try:
        ARGV[:] = args_list
        verb = _find_verb(args_list)
        if verb is not None and verb not in VERBS:
            raise UsageError(f"unknown command '{verb}'", hint="see 'sevbox --help'")
        parser = build_parser(verb)
        args = parser.parse_args(args_list)
        logsetup.configure(log_file=args.log, log_format=args.log_format, debug=args.debug)
        handler = getattr(args, "handler", None)
        if handler is None:
            if args.verb is None:
                parser.print_help()
                return ExitCode.USAGE
            sub_parser = getattr(args, "subparser", None)
            name = args.verb
            if sub_parser is not None:
                sub_parser.print_help(sys.stderr)
                name = sub_parser.prog.removeprefix("sevbox ")
            raise UsageError(f"'{name}' needs a sub-command", hint=f"see 'sevbox {name} --help'")
        return int(handler(args))
    except SevboxError as err:
        log.error("%s", err)
        print(f"sevbox: {err}", file=sys.stderr)
        return int(err.exit_code)
    except KeyboardInterrupt:
        print("sevbox: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 1
    except Exception as err:  # a bug, not a user error: one line, traceback only with --debug
        log.exception("internal error")
        print(f"sevbox: internal error: {type(err).__name__}: {err}", file=sys.stderr)
        if debug:
            import traceback

            traceback.print_exc()
        else:
            print("sevbox: (run with --debug for the traceback)", file=sys.stderr)
        return 1
