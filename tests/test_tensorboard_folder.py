"""`tensorboard/` removed while a run trains (issue 34 item 4): its events would go to a deleted
file and the run would end without event files, so the folder is made again, from the next
event on, with the session's HParams, and a warning says what was lost."""
from __future__ import annotations

import shutil

import pytest
from run_fixtures import accumulator, scalars

from utils.outputs.tensorboard import TensorBoard, tensorboard_folder

pytest.importorskip("tensorboard")  # the reader (requirements-tensorboard.txt)


def test_a_removed_folder_is_made_again_with_a_warning(tmp_path, capsys):
    board = TensorBoard(tensorboard_folder(str(tmp_path)), 0)
    board.hparams({"lr": 0.1}, ["Validation/top1_error"], 0)
    board.scalars(1, {"Train/loss": 2.0})
    board.flush()
    shutil.rmtree(tensorboard_folder(str(tmp_path)))
    board.scalars(5, {"Train/loss": 1.0})
    board.finished(5)
    board.close()
    warning = capsys.readouterr().err.strip().splitlines()
    assert warning == [f"warning: {tmp_path}/tensorboard was removed while the run trained: "
                       "made again; the TensorBoard events before step 5 are gone"]
    assert scalars(tmp_path) == {"Train/loss": [(5, 1.0)]}
    metadata = accumulator(tmp_path).summary_metadata  # (the new file's HParams session)
    assert {"_hparams_/experiment", "_hparams_/session_start_info",
            "_hparams_/session_end_info"} <= set(metadata)


def test_integers_a_float64_cannot_hold_reach_hparams_as_text(tmp_path):
    """HParams keeps every number as a float64: `-e 9223372036854775808` given as a number
    ended in "ufunc 'isnan' not supported" inside tensorboardX, and 2**53 + 1 read back as
    2**53. Such integers are written as their text; those up to 2**53 stay numbers, exact."""
    from tensorboardX.proto.plugin_hparams_pb2 import HParamsPluginData

    from utils.outputs.tensorboard import flatten

    flat = flatten({"epochs": 2**63, "seed": 2**53, "next": 2**53 + 1, "small": -2**53,
                    "huge": -2**53 - 1})
    assert flat == {"epochs": "9223372036854775808", "seed": 2**53, "next": "9007199254740993",
                    "small": -2**53, "huge": "-9007199254740993"}
    board = TensorBoard(tensorboard_folder(str(tmp_path)), 0)
    board.hparams(flat, ["Validation/top1_error"], 0)
    board.close()
    start = HParamsPluginData.FromString(accumulator(tmp_path).summary_metadata[
        "_hparams_/session_start_info"].plugin_data.content).session_start_info
    read = {k: v.string_value or int(v.number_value) for k, v in start.hparams.items()}
    assert read == flat
