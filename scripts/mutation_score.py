"""Print the mutation score of each mutated module from mutmut's result files (mutants/**.meta).

scripts/mutation.sh runs it after `mutmut run`: mutmut's own summary is one line for all the
modules, and the score is wanted per module, with the mutants that no test killed listed.
A mutant counts as killed when a test failed or timed out on it (an endless loop the mutation
made); one that no test reaches counts as surviving.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Dict, Iterable, List, NamedTuple, Optional

# mutmut's exit codes (mutmut/stats.py): a test failed (1, or 3 for an error inside pytest),
# the run was stopped by the time limit (36, or the signal codes of a CPU-time limit).
KILLED_CODES = {1, 3}
TIMEOUT_CODES = {36, 24, -24, 152, 255}
NOT_CHECKED = None


class ModuleScore(NamedTuple):
    module: str
    killed: int
    total: int
    survivors: List[str]


def module_score(module: str, exit_code_by_mutant: Dict[str, Optional[int]]) -> ModuleScore:
    """Killed / total for one module; `survivors` are the mutant names no test killed."""
    survivors = sorted(name for name, code in exit_code_by_mutant.items()
                       if code not in KILLED_CODES and code not in TIMEOUT_CODES)
    total = len(exit_code_by_mutant)
    return ModuleScore(module, total - len(survivors), total, survivors)


def unchecked(exit_code_by_mutant: Dict[str, Optional[int]]) -> int:
    """How many mutants the run did not reach (a run stopped early, or filtered)."""
    return sum(code is NOT_CHECKED for code in exit_code_by_mutant.values())


def score_lines(scores: Iterable[ModuleScore]) -> List[str]:
    """One line per module (killed / total and the percentage), its survivors indented below,
    then the total."""
    lines, killed, total = [], 0, 0
    for score in scores:
        percent = 100.0 * score.killed / score.total if score.total else 100.0
        lines.append(f"{score.module}: {score.killed} / {score.total} killed ({percent:.1f} %)")
        lines.extend(f"    survived: {name}" for name in score.survivors)
        killed, total = killed + score.killed, total + score.total
    if total:
        lines.append(f"all: {killed} / {total} killed ({100.0 * killed / total:.1f} %)")
    return lines


def read_results(mutants: Path, modules: Iterable[str]) -> Dict[str, Dict[str, Optional[int]]]:
    """Each module's mutant → exit code, from mutmut's `<module>.py.meta` in `mutants`."""
    results = {}
    for module in modules:
        meta = mutants / f"{module}.meta"
        if not meta.is_file():
            raise SystemExit(f"mutation: no results for {module} in {mutants} (run mutmut first)")
        results[module] = json.loads(meta.read_text(encoding="utf-8"))["exit_code_by_key"]
    return results


def main(argv: List[str]) -> int:
    """`mutation_score.py MUTANTS_DIR MODULE.py...`: the per-module scores; status 1 when a
    module has a mutant the run did not check."""
    mutants, modules = Path(argv[0]), argv[1:]
    results = read_results(mutants, modules)
    print("\n".join(score_lines(module_score(m, codes) for m, codes in results.items())))
    missing = {m: unchecked(codes) for m, codes in results.items() if unchecked(codes)}
    for module, count in missing.items():
        print(f"mutation: {count} mutants of {module} were not checked", file=sys.stderr)
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
