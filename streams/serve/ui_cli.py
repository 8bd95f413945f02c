"""``dbopt ui hash-password``: the bcrypt hash of a password for ``DBOPT_UI_USERS``.

The password is read from standard input (one line; at a terminal it is asked for without echo),
never from the command line, where other users and the shell history would see it. The hash is
the last line of standard output: ``DBOPT_UI_USERS=olivia:operator:$(... | tail -1)``.
"""

from __future__ import annotations

import argparse
import getpass
import sys

from .auth import DEFAULT_ROUNDS, hash_password

HELP = "dbopt serve's users: `hash-password` reads a password on stdin and prints its bcrypt hash last"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION")
    sub.required = True
    hashing = sub.add_parser("hash-password", help="read a password on stdin, print its hash as the last line",
                             description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    hashing.add_argument("--rounds", type=int, choices=range(10, 17), metavar="10..16", default=DEFAULT_ROUNDS,
                         help=f"bcrypt cost: 2^rounds iterations (default {DEFAULT_ROUNDS})")


def run(args: argparse.Namespace) -> int:
    if sys.stdin.isatty():
        password = getpass.getpass("password: ")
        if getpass.getpass("again: ") != password:
            print("dbopt ui hash-password: the two passwords differ", file=sys.stderr)
            return 2
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    try:
        hashed = hash_password(password, args.rounds)
    except ValueError as exc:
        print(f"dbopt ui hash-password: {exc}", file=sys.stderr)
        return 2
    print("user entry for DBOPT_UI_USERS: NAME:viewer:HASH or NAME:operator:HASH, with HASH:", file=sys.stderr)
    print(hashed)
    return 0
