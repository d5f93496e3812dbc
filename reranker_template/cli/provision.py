"""`reranker provision`: run PROVISIONING_SCRIPT once (the stack runs it as a supervisord program)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from reranker_template.errors import EXIT_FAILURE, EXIT_OK
from reranker_template.paths import Paths, container_paths, default_paths, local_paths
from reranker_template.settings import load_settings

EPILOG = """\
PROVISIONING_SCRIPT is an http(s) URL or a local path. It runs once: a marker
(.provisioning_complete, in / in the container, in the state directory elsewhere) stops later boots
from running it again; delete the marker to run it again.

settings (environment):
  PROVISIONING_SCRIPT    the script (a #! line picks its interpreter; otherwise bash)
  PROVISIONING_FAILURE   continue (default: vLLM starts anyway) or stop (vLLM stays down)
  PROVISIONING_SHA256    refuse a script whose sha256 differs (sha256sum script.sh)
  PROVISIONING_TIMEOUT   seconds before a hanging script is killed (default 1800)

examples:
  PROVISIONING_SCRIPT=./provisioning/predownload-model.sh reranker provision
  reranker provision --status       what the markers say
  exit status: 0, or 1 when the script failed and PROVISIONING_FAILURE=stop
"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "provision",
        help="run PROVISIONING_SCRIPT once (markers stop it running again)",
        description="Fetch PROVISIONING_SCRIPT and run it once, before vLLM starts.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--layout",
        choices=("auto", "container", "local"),
        default="auto",
        help="where state and logs live: container (reranker boot), local (reranker serve); "
        "auto picks as `reranker token` does",
    )
    parser.add_argument(
        "--marker-dir",
        type=Path,
        help="where the markers go (default: / in the container, the state directory otherwise)",
    )
    parser.add_argument("--status", action="store_true", help="print what the markers say and exit")
    parser.set_defaults(func=run)


def _paths(layout: str) -> Paths:
    if layout == "container":
        return container_paths(os.environ)
    if layout == "local":
        return local_paths(os.environ)
    return default_paths(os.environ)


def run(args: argparse.Namespace) -> int:
    from reranker_template.serve.provisioning import (
        COMPLETE_MARKER,
        FAILED_MARKER,
        RUNNING_MARKER,
        provisioning_state,
        run_provisioning,
    )

    settings = load_settings()
    paths = _paths(args.layout)
    marker_dir = args.marker_dir or paths.provisioning_marker_dir
    if args.status:
        state = provisioning_state(marker_dir)
        if state is None:
            print(f"running ({marker_dir / RUNNING_MARKER} exists)")
        elif state.state == "none":
            configured = settings.provisioning_script or "not set"
            print(f"not run yet here (PROVISIONING_SCRIPT: {configured}); markers go in {marker_dir}")
        elif state.state == "complete":
            print(f"done ({marker_dir / COMPLETE_MARKER})")
        else:
            may = "may" if state.may_start_vllm else "may not"
            print(f"failed: {state.reason} ({marker_dir / FAILED_MARKER}); vLLM {may} start")
        return EXIT_OK
    if not settings.provisioning_script:
        print("[provisioning] PROVISIONING_SCRIPT is not set; nothing to do")
        return EXIT_OK
    paths.create()
    result = run_provisioning(settings, paths, marker_dir)
    return EXIT_OK if result.may_start_vllm else EXIT_FAILURE
