"""Where the tests find the repository and its data (one definition for every test file)."""
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "data" / "demo"  # the committed demo dataset
CFG = REPO / "cfg"  # the recipes
DATA_DIR = REPO / "tests" / "data"
PARAM_SPEC_DIR = DATA_DIR / "param-spec"  # the published weight files' names and shapes
# Seconds a script run by a test may take before it is killed and the test fails: a guard
# against a hang, not a measure of speed (a busy CPU under `nice` makes a 3-epoch demo run
# take over 300 s), so far above any run's time.
HANG_GUARD = 1800
