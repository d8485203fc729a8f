"""The batch plan alone, without DALI: which images each rank's batches hold, and what a saved
position means."""
from __future__ import annotations

import json
import logging
from typing import List

import numpy as np
import pytest

from utils.data.batch_plan import BatchPlan, Shard, batch_positions
from utils.labels.file_list import FileList
from utils.process.errors import DataError
from utils.train.step import update_group, updates_per_epoch


def files(count: int) -> FileList:
    return FileList.from_files([f"img_{i}.JPEG" for i in range(count)], list(range(count)))


@pytest.mark.parametrize("count,batch,ranks", [(13, 4, 2), (8, 4, 2), (5, 8, 3), (1, 1, 1)])
def test_an_epoch_of_all_ranks_holds_every_image_once(count, batch, ranks):
    plans = [BatchPlan(files(count), batch, True, seed=7, shard=Shard(r, ranks))
             for r in range(ranks)]
    assert {p.global_batch for p in plans} == {batch * ranks}
    assert {p.iterations_per_epoch for p in plans} == {-(-count // (batch * ranks))}
    for epoch in (0, 1):
        seen = []
        for plan in plans:
            for i in range(plan.iterations_per_epoch):
                planned = plan.batch(epoch, i)
                assert (planned.epoch, planned.iteration) == (epoch, i)
                assert len(planned.indices) == batch  # padded, never short
                seen += planned.indices[planned.valid].tolist()
        assert sorted(seen) == list(range(count))


def test_training_shuffles_each_epoch_and_validation_keeps_the_list_order():
    shuffled = BatchPlan(files(40), 40, True, seed=1)
    first, second = shuffled.batch(0, 0).indices, shuffled.batch(1, 0).indices
    assert sorted(first) == sorted(second) == list(range(40)) and (first != second).any()
    assert (BatchPlan(files(40), 40, True, seed=1).batch(0, 0).indices == first).all()
    assert (BatchPlan(files(40), 40, False).batch(3, 0).indices == np.arange(40)).all()


def test_a_saved_position_comes_back_and_a_changed_layout_is_refused_mid_epoch(caplog):
    plan = BatchPlan(files(13), 4, True, seed=2)
    saved = json.loads(json.dumps({"epoch": 3, "iteration": 2, **plan.layout}))
    assert BatchPlan(files(13), 4, True, seed=2).position_of(saved) == (3, 2)
    other = BatchPlan(files(13), 3, True, seed=2)
    with pytest.raises(DataError, match=r"^cannot resume mid-epoch 3 \(iteration 2\): the data "
                                        r"layout changed \(batch_size 4 -> 3\)$"):
        other.position_of(saved)
    assert other.position_of({**saved, "iteration": 0}) == (3, 0)  # at a boundary: a warning
    with pytest.raises(DataError, match=r"^iteration 9 outside 0\.\.4$"):
        plan.position_of({**saved, "iteration": 9})


def test_a_saved_position_continues_on_another_split_of_the_images_done(caplog):
    """Iteration 2 of 2 ranks x 4 is 16 images of the epoch's order done: iteration 2 of 1
    rank x 8, 4 of 1 x 4, 2 of 4 x 2; 1 x 3 cannot continue there mid-epoch, but may from an
    epoch boundary, which another split does not make a change of layout."""
    saved = {"epoch": 3, "iteration": 2,
             **BatchPlan(files(45), 4, True, seed=2, shard=Shard(1, 2)).layout}
    for batch, ranks, iteration in ((8, 1, 2), (4, 1, 4), (2, 4, 2)):
        for rank in range(ranks):
            plan = BatchPlan(files(45), batch, True, seed=2, shard=Shard(rank, ranks))
            assert plan.position_of(saved) == (3, iteration)
    other = BatchPlan(files(45), 3, True, seed=2)
    with pytest.raises(DataError, match=r"^cannot resume mid-epoch 3 \(iteration 2\): the data "
                                        r"layout changed \(batch_size 4 -> 3, num_ranks 2 -> 1\)$"):
        other.position_of(saved)
    caplog.set_level(logging.WARNING, logger="nnabla")
    assert other.position_of({**saved, "iteration": 0}) == (3, 0)
    assert other.position_of({**saved, "iteration": 0, "seed": 1}) == (3, 0)
    assert [r.getMessage() for r in caplog.records] == [
        "data layout changed since the saved state (seed); epoch 3 onwards follows the new "
        "layout"]


def update_images(count: int, ranks: int, batch: int, steps: int) -> List[List[int]]:
    """The images (sorted, padding left out) of each update of epoch 1 over all ranks, with
    `steps` batches of `batch` per rank and update."""
    plans = [BatchPlan(files(count), batch, True, seed=5, shard=Shard(r, ranks))
             for r in range(ranks)]
    iterations = plans[0].iterations_per_epoch
    updates: List[List[int]] = []
    for i in range(iterations):
        if update_group(i, iterations, steps)[0]:
            updates.append([])
        for plan in plans:
            planned = plan.batch(1, i)
            updates[-1] += planned.indices[planned.valid].tolist()
    assert len(updates) == updates_per_epoch(iterations, steps)
    return [sorted(u) for u in updates]


@pytest.mark.parametrize("count", [96, 100, 13])
def test_every_split_of_a_global_batch_makes_each_update_of_the_same_images(count):
    """A global batch of 32 as 2 ranks x 16, 1 x 32, 1 x 16 x 2 accumulated batches or
    4 x 4 x 2: update u holds the same images, the epoch's last (padded) one included."""
    expected = update_images(count, 2, 16, 1)
    assert len(expected) == -(-count // 32)
    assert sorted(i for u in expected for i in u) == list(range(count))
    for ranks, batch, steps in ((1, 32, 1), (1, 16, 2), (4, 4, 2)):
        assert update_images(count, ranks, batch, steps) == expected, (ranks, batch, steps)


def test_a_plan_refuses_no_images_a_batch_below_one_and_a_rank_outside_the_shard():
    with pytest.raises(DataError, match="no images"):
        BatchPlan(files(0), 4, True)
    with pytest.raises(ValueError, match="batch size must be positive"):
        BatchPlan(files(3), 0, True)
    with pytest.raises(ValueError, match=r"rank 2 outside 0\.\.1"):
        Shard(2, 2)


def test_the_real_images_of_iterations_over_all_ranks():
    plan = BatchPlan(files(13), 2, True, shard=Shard(1, 2))  # 4 images an iteration
    assert [plan.images_in(i, 1) for i in range(4)] == [4, 4, 4, 1]
    assert plan.images_in(2, 2) == 5 and plan.images_in(0, 4) == 13 and plan.images_in(4, 1) == 0


def test_the_refusals_say_exactly_what_is_wrong():
    """The lines a user or a caller gets: the rank's range, the list's name, the repeats."""
    with pytest.raises(ValueError, match=r"^rank 3 outside 0\.\.2$"):
        batch_positions(10, 2, 3, 3, 0)
    with pytest.raises(ValueError, match=r"^rank -1 outside 0\.\.2$"):
        batch_positions(10, 2, -1, 3, 0)
    with pytest.raises(DataError, match=r"^the image list: no images$"):
        BatchPlan(files(0), 4, True)
    for repeats, training in ((0, True), (2, False)):
        with pytest.raises(ValueError, match=rf"^repeats {repeats}: a positive number, 1 unless "
                                             r"training$"):
            BatchPlan(files(3), 1, training, repeats=repeats)


def test_the_last_rank_gets_the_last_slot_of_each_iteration():
    positions, valid = batch_positions(10, 2, 2, 3, 1)  # slots 6 + (0, 3) + 2
    assert positions.tolist() == [8, 1] and valid.tolist() == [True, False]


def test_repeated_augmentation_shows_each_image_k_times_a_cycle_side_by_side():
    """repeats 2 on 6 images: epochs 0 and 1 are one cycle, each image twice in a row."""
    plan = BatchPlan(files(6), 6, True, seed=4, repeats=2)
    cycle = np.concatenate([plan.batch(0, 0).indices, plan.batch(1, 0).indices])
    assert sorted(cycle.tolist()) == sorted(list(range(6)) * 2)
    assert (cycle[0::2] == cycle[1::2]).all()
    assert plan.layout["repeats"] == 2


def test_a_change_of_several_keys_names_each_and_the_last_iteration_is_a_boundary(caplog):
    plan = BatchPlan(files(13), 4, True, seed=2)
    saved = {"epoch": 1, "iteration": 0, **plan.layout}
    caplog.set_level(logging.WARNING, logger="nnabla")
    other = BatchPlan(files(13), 4, False, seed=5)
    assert other.position_of(saved) == (1, 0)
    assert [r.getMessage() for r in caplog.records] == [
        "data layout changed since the saved state (seed, training); epoch 1 onwards follows "
        "the new layout"]
    assert plan.position_of({**saved, "iteration": 4}) == (1, 4)  # the epoch done
