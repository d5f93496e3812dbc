"""`reranker gateway` (the supervisord program in front of vLLM) and `reranker token` (the link again)."""

from __future__ import annotations

import argparse
import os

from reranker_template.errors import Failure
from reranker_template.paths import default_paths
from reranker_template.settings import load_settings

GATEWAY_HELP = """\
Run the authenticated gateway: public on GATEWAY_HOST:GATEWAY_PORT, proxying to vLLM on
127.0.0.1:VLLM_PORT. supervisord runs this as the `gateway` program; you rarely start it yourself.

Tokens: OPEN_BUTTON_TOKEN, API_KEYS (comma-separated), WEB_PASSWORD, VLLM_API_KEY. With none set, a
token is generated once into the state directory and the link is printed in the log.
Other settings: ENABLE_AUTH, ENABLE_HTTPS (TLS_CERT_FILE/TLS_KEY_FILE), MAX_REQUEST_BYTES.
"""

GATEWAY_EPILOG = """\
examples:
  reranker gateway                                  as supervisord runs it
  GATEWAY_PORT=9000 VLLM_PORT=8001 reranker gateway  in front of a vLLM you started on port 8001
  ENABLE_HTTPS=true reranker gateway                HTTPS (self-signed unless a certificate is given)
"""

TOKEN_HELP = """\
Print the link that opens the landing page with the token (what Vast's Open button does), or with
--token-only just the token, for scripts.
"""

TOKEN_EPILOG = """\
examples:
  reranker token                                    http://1.2.3.4:41234/?token=...
  curl -H "Authorization: Bearer $(reranker token --token-only)" http://localhost:8000/v1/models
"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    gateway = subparsers.add_parser(
        "gateway",
        help="run the auth gateway in front of vLLM",
        description=GATEWAY_HELP,
        epilog=GATEWAY_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    gateway.set_defaults(func=run_gateway)
    token = subparsers.add_parser(
        "token",
        help="print the link with the access token",
        description=TOKEN_HELP,
        epilog=TOKEN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    token.add_argument("--token-only", action="store_true", help="print only the token")
    token.set_defaults(func=print_token)


def run_gateway(args: argparse.Namespace) -> int:
    from reranker_template.gateway import server

    settings = load_settings()
    return server.run(settings, default_paths())


def print_token(args: argparse.Namespace) -> int:
    from reranker_template.gateway.auth import local_tokens
    from reranker_template.gateway.server import public_base_url

    settings = load_settings()
    paths = default_paths()
    tokens = local_tokens(settings.tokens, paths.token_file)
    if not tokens:
        if not settings.enable_auth:
            print(f"{public_base_url(settings, os.environ)}/   (ENABLE_AUTH=false: no token needed)")
            return 0
        raise Failure(
            f"no token yet: none is configured (OPEN_BUTTON_TOKEN, API_KEYS, WEB_PASSWORD) and "
            f"{paths.token_file} does not exist; the gateway creates it on its first start (reranker serve)"
        )
    if args.token_only:
        print(tokens[0])
    else:
        print(f"{public_base_url(settings, os.environ)}/?token={tokens[0]}")
    return 0
