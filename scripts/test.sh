#!/usr/bin/env bash
# Set up .venv (with the test tools and the export extra, so the ONNX tests run) and run the
# lint and the whole test suite, or with --fast its fast subset (the tests not marked slow:
# every module, in under two minutes). Either way the time taken is printed at the end.
# The tests run on two pytest-xdist workers (one per core: NNabla's CPU backend uses one),
# each module's tests on one worker (--dist loadfile: module fixtures are built once), in a
# random order (pytest-randomly: modules, and the tests within each, shuffled by a seed that
# the header prints and both workers share). `--randomly-seed=N` repeats a run's order,
# `-p no:randomly` gives file order. Other arguments go to pytest and override these, e.g.
# `bash scripts/test.sh -k weights`, or `-n 4` on a bigger machine.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
selection=()
if [ "${1:-}" = "--fast" ]; then
  shift
  selection=(-m "not slow")
fi
bash "$root/scripts/setup.sh" --dev --export
cd "$root"
.venv/bin/ruff check .
started=$(date +%s)
status=0
.venv/bin/python -m pytest tests -n 2 --dist loadfile ${selection[@]+"${selection[@]}"} "$@" || status=$?
echo "test time: $(( $(date +%s) - started )) s${selection[*]:+ (fast subset)}"
exit "$status"
