"""Vast.ai: the template, finding an offer, renting it, waiting until it answers, tearing it down.

Built on the `vastai` package's SDK (`VastAI`), typed by the `api.VastApi` Protocol of the calls we make.
Every SDK error becomes `VastError`: one line that says what to change. Decisions (filters, request
bodies, the template, what a status means) are pure; the edges that talk to Vast, to the instance and
to the records file are thin and take their collaborators as arguments, so tests point them at
loopback stand-ins.

- `api`: `VastApi`, `make_client`, the API key, `vast_call` (SDK errors -> VastError)
- `offers`: the GPU memory filter (one unit: MiB), `OfferQuery`, `Offer`, search
- `instances`: `LaunchSpec`, create / show / list / destroy, `InstanceView`
- `wait`: `wait_until_ready`, `probe_health` (the gateway's /health via `protocol.HealthBody`)
- `records`: ~/.config/reranker/instances.json, the endpoints and keys launched from here
- `template`: the template body, its readme section, publishing it
- `report`: what the commands show (tables, `--json` rows, the ready and status summaries)

Importing any of them imports neither `vastai`, `requests` nor rich (only a call, or a table, does), so
the CLI can build its parser cheaply.
"""
