"""The table core's stores: sequence codes as runs, rows that spill, values kept narrow."""

from __future__ import annotations

import numpy as np
import pytest

from tbptt_cli.readers import spill


def test_codes_count_lengths_and_grouping_across_blocks(tmp_path):
    codes = spill.Codes(str(tmp_path))
    codes.add(np.array([0, 1], dtype=np.int32), np.array([2, 1]), np.array([1.0, 2.0, 1.0]))
    codes.add(np.array([1, 2], dtype=np.int32), np.array([1, 2]), np.array([2.0, 1.0, 3.0]))
    assert codes.grouped and not codes.repeats and codes.kept == 0  # nothing kept yet
    np.testing.assert_array_equal(codes.lengths[:3], [2, 2, 2])
    codes.add(np.array([2], dtype=np.int32), np.array([1]), np.array([0.5]))  # time goes back
    assert not codes.grouped
    np.testing.assert_array_equal(codes.array(), [0, 0, 1, 1, 2, 2, 2])
    codes.close()


@pytest.mark.parametrize(
    ("batches", "grouped", "repeats"),
    [
        ([([0, 1], [2, 2], [5, 6, 1, 1]), ([1, 2], [1, 1], [2, 0])], True, True),  # 1 at 1 twice
        ([([0, 1], [2, 2], [5, 6, 1, 2]), ([1, 2], [1, 1], [3, 0])], True, False),
        ([([0, 1], [2, 2], [5, 6, 1, 2]), ([1, 2], [1, 1], [1.5, 0])], False, False),
        ([([0, 1], [2, 2], [5, 6, 1, 2]), ([0], [1], [7])], False, False),  # back to 0
        ([([0, 1, 0], [1, 1, 1], [1, 1, 2])], False, False),
    ],
)
def test_codes_see_grouping_and_repeats_across_batches(batches, grouped, repeats):
    codes = spill.Codes(None)
    for runs, lengths, times in batches:
        codes.add(np.array(runs, np.int32), np.array(lengths), np.array(times, float))
    assert (codes.grouped, codes.repeats) == (grouped, repeats)
    expected = np.concatenate([np.repeat(r, n) for r, n, _ in batches])
    np.testing.assert_array_equal(codes.array(), expected)
    codes.close()


def test_zero_width_store_keeps_no_block_alive():
    store = spill.Store(0, 1 << 20, None)
    block = np.ones((1000, 3))
    store.add(np.ascontiguousarray(block[:, 3:]))
    assert store.buffer is None and store.array().shape == (1000, 0)


@pytest.mark.parametrize("budget", [1 << 20, 64])
def test_a_narrow_store_widens_at_the_first_value_it_cannot_hold(tmp_path, budget):
    store = spill.Store(2, budget, str(tmp_path), np.float32, expected=6)
    store.add(np.array([[0.1, 1.0], [0.2, 2.0]]))
    store.add_columns([np.array([3.0, 1e39]), np.array([3, 4], dtype=np.int64)], 2)
    store.add(np.array([[0.4, 5.0]]))
    rows = np.asarray(store.array())
    assert rows.dtype == np.float64 and (store.file is not None) == (budget == 64)
    np.testing.assert_array_equal(
        rows, [[np.float32(0.1), 1], [np.float32(0.2), 2], [3, 3], [1e39, 4], [0.4, 5]]
    )
    store.close()


def test_a_store_spilling_to_its_path_widens_into_a_new_file_there(tmp_path):
    path = tmp_path / "part.values"
    store = spill.Store(1, 0, str(tmp_path), np.float16, path=str(path))
    store.add(np.array([[1.5], [2.0]]))
    store.add(np.array([[70000.0]]))  # beyond float16
    rows = store.array()
    assert isinstance(rows, np.memmap) and rows.filename == str(path)
    np.testing.assert_array_equal(np.fromfile(path), [1.5, 2.0, 70000.0])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["part.values"]
    store.close()
