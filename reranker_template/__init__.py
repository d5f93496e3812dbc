"""Serve rerankers with vLLM behind an auth gateway."""
