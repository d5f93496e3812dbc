"""Serve rerankers with vLLM behind an auth gateway.

The code is a pipeline, one sub-package per stage (CONTRIBUTING.md draws it):
`settings` -> `facts/` -> `plan/` -> `serve/` (rendered configs, processes) and, per request,
client -> `gateway/` -> vLLM. `client/` and `vast/` are the user's side; `cli/` wires the commands.
"""
