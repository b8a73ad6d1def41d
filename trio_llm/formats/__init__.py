"""File formats read by several parts: the GGUF reader, the Modelfile and its PARAMETER values.

Leaf modules: they import nothing from trio_llm but errors and config, so the store, the engine
and the CLI may all use them without pulling in each other (tests/test_layering.py keeps it so).
"""
