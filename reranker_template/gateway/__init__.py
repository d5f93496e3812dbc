"""The public auth gateway in front of vLLM: token auth on every route, health, landing page, TLS, metrics.

vLLM listens on loopback only; this package is the one process that faces the network. `app.build_app`
assembles the aiohttp application; `cli_gateway` runs it as the supervisord program `gateway`.
"""
