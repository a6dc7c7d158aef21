"""``guardrail serve``: an OpenAI-compatible server that guards every answer (see ``guardrail.server``).

Binds 127.0.0.1 unless told otherwise. Client API keys come from ``--api-key`` (repeatable) or the
comma-separated environment variable GUARDRAIL_API_KEYS; without any, the server accepts every client on the
address it binds.
"""

from __future__ import annotations

import argparse
import os
import sys

from guardrail.commands.chat import add_model_arguments, build_guard
from guardrail.errors import BackendError, GuardrailError, JudgeError, PolicyError

__all__ = ["add_parsers"]


def run_serve(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from guardrail.server import create_app

        guard = build_guard(args)
    except ImportError:
        print("guardrail serve needs the serve extra: pip install 'guardrail-rewind[serve]'", file=sys.stderr)
        return 1
    except (PolicyError, JudgeError, BackendError, GuardrailError) as err:
        print(f"guardrail serve: {err}", file=sys.stderr)
        return 1
    keys = list(args.api_key or []) + [k for k in os.environ.get("GUARDRAIL_API_KEYS", "").split(",") if k]
    name = args.served_name or args.model_name or "guarded"
    app = create_app(guard, model_name=name, api_keys=keys)
    auth = f"{len(keys)} client API key(s)" if keys else "no client API keys"
    print(f"[guardrail] serving {guard!r} as {name!r} on http://{args.host}:{args.port}/v1 ({auth})", file=sys.stderr)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    serve = sub.add_parser(
        "serve", help="an OpenAI-compatible server that guards every answer", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    add_model_arguments(serve)
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--api-key", action="append", help="a client API key to accept (repeatable)")
    serve.add_argument("--served-name", help="model id shown to clients (default: --model-name or 'guarded')")
    serve.add_argument("--audit", help="append audit records (JSON lines) to this file")
    serve.set_defaults(run=run_serve)
