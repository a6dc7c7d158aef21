"""``guardrail serve``: an OpenAI-compatible server that guards every answer (see ``guardrail.server``).

Binds 127.0.0.1 unless told otherwise. Client API keys come from ``--api-key`` (repeatable) or the
comma-separated environment variable GUARDRAIL_API_KEYS; without any, the server accepts every client on the
address it binds.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from guardrail.commands.chat import add_model_arguments, build_guard
from guardrail.errors import BackendError, GuardrailError, JudgeError, PolicyError

__all__ = ["add_parsers"]


def client_keys(args: argparse.Namespace) -> list[str]:
    """The client keys of ``--api-key`` and GUARDRAIL_API_KEYS, trimmed; ``ValueError`` for a blank one (an unset
    variable in ``--api-key "$KEY"`` would otherwise start a server that reports a key and accepts everyone)."""
    given = list(args.api_key or [])
    env = os.environ.get("GUARDRAIL_API_KEYS")
    if env is not None:
        given += env.split(",")
    keys = [key.strip() for key in given]
    if any(not key for key in keys):
        raise ValueError("a client API key is empty or blank (--api-key or GUARDRAIL_API_KEYS): give a real key")
    return keys


def run_serve(args: argparse.Namespace) -> int:
    try:
        keys = client_keys(args)
    except ValueError as err:
        print(f"guardrail serve: {err}", file=sys.stderr)
        return 2
    if not keys and args.host not in {"127.0.0.1", "localhost", "::1"}:
        print(f"guardrail serve: WARNING: listening on {args.host} with no client API keys: anyone who can reach "
              "it can use the upstream model; pass --api-key", file=sys.stderr)  # fmt: skip
    try:
        import uvicorn

        from guardrail.server import ServerLimits, create_app

        guard = build_guard(args)
    except ImportError:
        print("guardrail serve needs the serve extra: pip install 'guardrail-rewind[serve]'", file=sys.stderr)
        return 1
    except (PolicyError, JudgeError, BackendError, GuardrailError) as err:
        print(f"guardrail serve: {err}", file=sys.stderr)
        return 1
    name = args.served_name or args.model_name or "guarded"
    limits = ServerLimits(
        max_body_bytes=args.max_body_bytes, max_messages=args.max_messages, max_prompt_tokens=args.max_prompt_tokens,
        max_tokens=args.max_tokens_limit,
    )  # fmt: skip
    app = create_app(guard, model_name=name, api_keys=keys, limits=limits)
    auth = f"{len(keys)} client API key(s)" if keys else "no client API keys"
    print(f"[guardrail] serving {guard!r} as {name!r} on http://{args.host}:{args.port}/v1 ({auth})", file=sys.stderr)
    # SIGTERM / Ctrl-C: open requests get a few seconds, then they are cancelled (their upstream work with them)
    config = uvicorn.Config(app, host=args.host, port=args.port, log_level="warning",
                            timeout_graceful_shutdown=args.grace)  # fmt: skip

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            app.state.draining.set()  # /ready answers 503 from now on
            super().handle_exit(sig, frame)

    Server(config).run()
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
    serve.add_argument("--audit", help="append audit records (JSON lines) to this file (checked at start)")
    limits = serve.add_argument_group("limits on one request (413/400 past them)")
    limits.add_argument("--max-body-bytes", type=int, default=4 << 20, help="request body size (default: 4 MiB)")
    limits.add_argument("--max-messages", type=int, default=256, help="messages in one request (default: 256)")
    limits.add_argument(
        "--max-prompt-tokens", type=int, help="prompt tokens (default: the model's context window, else 32768)"
    )
    limits.add_argument("--max-tokens-limit", type=int, default=4096, help="largest max_tokens (default: 4096)")
    serve.add_argument(
        "--grace", type=float, default=5.0, help="seconds open requests get on shutdown (SIGTERM) (default: 5)"
    )
    serve.set_defaults(run=run_serve)
