"""`reranker worker`: the Vast Serverless worker (supervisord runs it when SERVERLESS or MASTER_TOKEN is set)."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from reranker_template.paths import default_paths
from reranker_template.settings import load_settings

WORKER_HELP = """\
Run the Vast Serverless worker in front of vLLM: it checks the signature of each request Vast's router
sends, forwards /v1/rerank, /v2/rerank, /rerank, /v1/score and /score to vLLM with the gateway's default
truncation, measures its capacity, and reports load and readiness to Vast's autoscaler.
supervisord runs this as the `worker` program when MASTER_TOKEN (set by Vast) or SERVERLESS=true is set.

Environment (Vast sets most of it): WORKER_PORT (3000), CONTAINER_ID, PUBLIC_IPADDR,
VAST_TCP_PORT_<WORKER_PORT>, MASTER_TOKEN, REPORT_ADDR (https://run.vast.ai), USE_SSL (true: a
certificate is signed by Vast at start), UNSECURED (false: never turn signature checks off in
production), VAST_URL (the console, for the certificate).
"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    worker = subparsers.add_parser(
        "worker",
        help="run the Vast Serverless worker (supervisord does, in serverless mode)",
        description=WORKER_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    worker.set_defaults(func=run_worker)


def run_worker(args: argparse.Namespace) -> int:
    from reranker_template.serve import worker
    from reranker_template.vast.api import vast_url

    logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(asctime)s worker %(levelname)s %(message)s")
    load_settings()  # a bad setting is one line here too, before anything starts
    paths = default_paths()
    return worker.run(os.environ, paths.plan_file, paths.vllm_status_file, vast_url(os.environ))
