"""``python -m pipeline.env check|diff [LOCK] [--failed]``: the installed packages against the lock.

- ``check``: every locked package is installed at its locked version (``make setup`` ends with it);
  exit 1 naming each one that is not.
- ``diff``: the packages whose installed version differs from the lock (``make test-latest`` prints
  them, and again with ``--failed`` when its tests fail); exit 0.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipeline.tracking.environment import LOCK_FILE, differing, format_rows, installed, lock_text, parse_pins


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.tracking.environment", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("command", choices=["check", "diff"])
    parser.add_argument("lock", nargs="?", default=str(LOCK_FILE), help="the lock file (default: %(default)s)")
    parser.add_argument("--failed", action="store_true", help="diff: say that the tests failed on these versions")
    args = parser.parse_args(argv)
    text = lock_text(Path(args.lock))
    if text is None:
        print(f"error: no lock at {args.lock}", file=sys.stderr)
        return 2
    rows = differing(parse_pins(text), installed(), both_ways=False)
    if args.command == "check":
        if rows:
            print(f"error: {len(rows)} installed packages differ from {args.lock}:", file=sys.stderr)
            print(format_rows(rows, "locked"), file=sys.stderr)
            print("fix: rm -rf .venv && make setup", file=sys.stderr)
            return 1
        print(f"environment matches {args.lock} ({len(parse_pins(text))} packages)")
        return 0
    if args.failed:
        print(f"make test-latest FAILED with the newest allowed versions; {len(rows)} differ from the lock:")
    else:
        print(f"{len(rows)} packages differ from {args.lock}" + (":" if rows else ""))
    if rows:
        print(format_rows(rows, "locked"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
