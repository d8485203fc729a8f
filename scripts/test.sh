#!/usr/bin/env bash
# Set up .venv (with the test tools and the export extra, so the ONNX tests run) and run the
# lint and the whole test suite.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -k weights`.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup.sh" --dev --export
cd "$root"
.venv/bin/ruff check .
exec .venv/bin/python -m pytest tests "$@"
