# trio-llm in a container: `docker build -t trio-llm .` then
# `docker run -d -p 11434:11434 -v ollama:/root/.ollama trio-llm` (see docs/docker.md).
# BASE is any Debian-style image whose python3 is CPython 3.11+ with the venv module
# (python:3.11-slim by default; the tests use a debootstrapped bookworm).
ARG BASE=python:3.11-slim

# Build stage: compile the C kernels (zig from the ziglang wheel) into a wheel.
FROM ${BASE} AS build
# Debian's own python3 ships without Python.h, which the cffi extension needs.
RUN if [ ! -e "$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["include"])')/Python.h" ]; then \
        apt-get update -qq && apt-get install -y -qq --no-install-recommends python3-dev \
        && rm -rf /var/lib/apt/lists/*; \
    fi \
    && python3 -m venv /opt/build
WORKDIR /src
COPY pyproject.toml setup.py build_ext.py README.md ./
COPY csrc csrc
COPY trio_llm trio_llm
# zig compiles for the building machine's CPU unless told otherwise; the image must run on any
# CPU of its architecture (the AVX2 kernels are picked at run time), so build for the baseline.
# `--build-arg TRIO_LLM_PORTABLE=0` gives a build tuned to this machine instead.
ARG TRIO_LLM_PORTABLE=1
RUN /opt/build/bin/pip wheel --no-cache-dir --disable-pip-version-check --no-deps \
        --wheel-dir /wheels .

# Runtime stage: the wheel and its dependencies in a venv; no compiler, no build tree.
FROM ${BASE}
COPY --from=build /wheels /wheels
RUN python3 -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check /wheels/*.whl \
    && rm -rf /wheels \
    && /opt/venv/bin/python -c "import trio_llm._kernels"
ENV PATH=/opt/venv/bin:$PATH \
    OLLAMA_HOST=0.0.0.0:11434 \
    PYTHONUNBUFFERED=1
EXPOSE 11434
VOLUME /root/.ollama
ENTRYPOINT ["trio-llm"]
CMD ["serve"]
