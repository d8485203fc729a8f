"""Where the tests find the repository and its data (one definition for every test file)."""
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "data" / "demo"  # the committed demo dataset
CFG = REPO / "cfg"  # the recipes
DATA_DIR = REPO / "tests" / "data"
PARAM_SPEC_DIR = DATA_DIR / "param-spec"  # the published weight files' names and shapes
