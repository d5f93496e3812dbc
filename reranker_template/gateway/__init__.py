"""The public auth gateway in front of vLLM: token auth on every route, health, landing page, TLS, metrics.

vLLM listens on loopback only; this package is the one process that faces the network. `server.run`
(what `reranker gateway`, the supervisord program, calls) sets up logging, tokens and TLS and serves
`app.build_app`: `app` routes and answers our own routes, `proxy` forwards the rest to vLLM, and
`responses` is the one error shape. The gateway reads the plan (plan/contract.py), never the preset
table or VLLM_ARGS: what it needs was decided at plan time.
"""
