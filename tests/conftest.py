"""Shared fixtures: the repository on sys.path, a clean NNabla parameter scope per test."""
import sys
from fnmatch import fnmatch
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

# The published weight files' tensor names and shapes (facts, kept as test data).
DATA_DIR = REPO / "tests" / "data"
PARAM_SPEC_DIR = DATA_DIR / "param-spec"


@pytest.fixture(autouse=True)
def fresh_parameters():
    import nnabla as nn

    nn.clear_parameters()
    yield
    nn.clear_parameters()


# The tests left out of the fast subset (`bash scripts/test.sh --fast`: -m "not slow"):
# the modules that run scripts end to end many times over, and the single tests that took a
# second or more on a 2-core machine, but for those that keep every script and module in
# the fast subset (train.py resuming under mpirun, the watchdog, export.py, infer.py,
# validation.py and the converter end to end). Patterns are `<file>::<test name>`.
SLOW_MODULES = ("test_reliability.py", "test_readme_commands.py", "test_setup_script.py")
SLOW_TESTS = (
    "test_convert.py::test_command_round_trip_gives_the_identical_file[[]resnet18]",
    "test_data.py::test_each_policy_*[[]randaugment]",
    "test_data.py::test_each_policy_*[[]autoaugment]",
    "test_datasets.py::test_the_*_layout*",
    "test_datasets.py::test_a_1000_class_*",
    "test_datasets.py::test_train_py_*",
    "test_download.py::test_every_script_*",
    "test_user_errors.py::test_an_export_*",
    "test_user_errors.py::test_a_list_and_a_label_file_given_through_pipes*",
    "test_validation.py::test_crop_pct_changes_the_resize",
    "test_convert.py::test_every_architecture_round_trips_and_classifies_the_same[[]resnet1*",
    "test_export.py::test_nhwc_four_channel_file_exports_like_nchw",
    "test_export.py::test_nnp_reproduces_nnabla*",
    "test_infer.py::test_nhwc_file_runs_on_the_cpu_with_the_same_probabilities",
    "test_initialisation.py::test_every_efficientnet_*[[]efficientnet_b[345678]]",
    "test_initialisation.py::test_every_efficientnet_*[[]efficientnet_l2]",
    "test_model_spec.py::test_efficientnet_l2_counts",
    "test_model_spec.py::test_parameter_counts_and_output_shape[[]efficientnet_b[78]]",
    "test_model_spec.py::test_parameter_counts_and_output_shape[[]resnet152]",
    "test_model_spec.py::test_parameters_match_published_spec[[]efficientnet_b[678]-*",
    "test_model_spec.py::test_parameters_match_published_spec[[]efficientnet_l2-*",
    "test_model_spec.py::test_parameters_match_published_spec[[]resnet152-*",
    "test_models_resnet.py::test_forward_gives_finite_logits[[]resnet152]",
    "test_obsolete_readme.py::test_quoted_commands_use_existing_scripts_and_flags",
    "test_published.py::test_the_senet_authors_weights_get_their_normalisation_or_a_warning",
    "test_train.py::*",
    "test_validation.py::test_two_ranks_give_the_same_result_as_one",
    "test_weights.py::test_layout_round_trip_and_in_memory_conversion",
    "test_stderr.py::test_the_policies_do_not_repeat_dalis_deprecation_warning",
    "test_blame.py::test_an_nnp_file_or_a_checkpoint_given_as_weights_is_named_as_such",
)


def pytest_collection_modifyitems(items):
    for item in items:
        name = f"{item.path.name}::{item.name}"
        if item.path.name in SLOW_MODULES or any(fnmatch(name, p) for p in SLOW_TESTS):
            item.add_marker(pytest.mark.slow)
