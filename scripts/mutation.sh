#!/usr/bin/env bash
# Mutation testing of the pure modules with their unit tests (docs/testing.md): installs the
# pinned mutmut into .venv when it is missing (requirements-mutation.txt; CI does not install
# it), runs it at low priority, and prints the score of each module, killed / total, with the
# surviving mutants listed.
#   bash scripts/mutation.sh                  every module in [tool.mutmut] of pyproject.toml
#   bash scripts/mutation.sh schedules plots  only these (a module's file name without .py)
# Each run starts afresh: mutmut's working copy ./mutants (git-ignored) is rebuilt. Every module
# takes most of an hour on a busy 2-core machine (docs/setup.md, "Mutation testing").
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
python=.venv/bin/python
[ -x "$python" ] || { echo "mutation: no .venv here; run: bash scripts/setup.sh --dev" >&2; exit 2; }

pinned="$(sed -n 's/^mutmut==//p' requirements-mutation.txt)"
if [ "$("$python" -c 'import importlib.metadata as m; print(m.version("mutmut"))' 2>/dev/null)" \
     != "$pinned" ]; then
  "$python" -m pip install --quiet --no-deps -r requirements-mutation.txt
fi

# The mutated files, as pyproject.toml lists them under only_mutate.
mapfile -t configured < <("$python" - <<'PY'
import toml  # mutmut's own dependency on Python 3.10
print("\n".join(toml.load("pyproject.toml")["tool"]["mutmut"]["only_mutate"]))
PY
)
files=()
if [ "$#" -eq 0 ]; then
  files=("${configured[@]}")
else
  for name in "$@"; do
    found=""
    for path in "${configured[@]}"; do
      [ "$(basename "$path" .py)" = "$name" ] && found="$path"
    done
    if [ -z "$found" ]; then
      echo "mutation: '$name' is not a mutated module; name one of:" \
           "$(for path in "${configured[@]}"; do basename "$path" .py; done | tr '\n' ' ')" >&2
      exit 2
    fi
    files+=("$found")
  done
fi

# mutmut names a mutant after its module's dotted path: select those of the chosen files.
patterns=()
for path in "${files[@]}"; do
  module="${path%.py}"
  patterns+=("${module//\//.}.*")
done

rm -rf mutants
mkdir mutants
started=$(date +%s)
status=0
nice -n 10 .venv/bin/mutmut run --max-children "$(nproc)" "${patterns[@]}" >mutants/run.log 2>&1 \
  || status=$?
if [ "$status" -ne 0 ]; then
  tail -n 30 mutants/run.log >&2
  echo "mutation: mutmut failed (status $status); its output is in mutants/run.log" >&2
  exit "$status"
fi
"$python" scripts/mutation_score.py mutants "${files[@]}"
echo "mutation time: $(( $(date +%s) - started )) s"
