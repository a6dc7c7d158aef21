"""The ``guardrail`` command line. Each command lives in ``guardrail.commands.<name>``.

Exit codes: 0 success, 1 invalid policy or input, 2 usage error.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from guardrail.commands import chat, check, evaluate, judge, serve

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    from guardrail import __version__

    parser = argparse.ArgumentParser(prog="guardrail", description="A guardrail that rewinds and regenerates.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    chat.add_parsers(sub)
    check.add_parsers(sub)
    evaluate.add_parsers(sub)
    judge.add_parsers(sub)
    serve.add_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``guardrail`` console script."""
    args = build_parser().parse_args(argv)
    try:
        code: int = args.run(args)
    except BrokenPipeError:  # `guardrail check | head`
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        # work in flight may sit in a worker thread inside torch; everything worth keeping is already flushed
        # (guardrail eval writes each result line as it goes), so leave at once instead of waiting for it
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(130)
    return code


if __name__ == "__main__":
    sys.exit(main())
