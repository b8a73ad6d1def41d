"""Benchmarks: `python -m trio_llm.bench MODEL.gguf` measures the engine in-process (engine.py);
`python -m trio_llm.bench serve` measures a running server over HTTP (serve.py)."""
