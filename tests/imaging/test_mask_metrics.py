"""Mask figures: known values on small masks."""

from __future__ import annotations

import numpy as np
import pytest

from imaging import mask_metrics


def _mask(rows: list[list[int]]) -> np.ndarray:
    return np.array(rows, dtype=np.uint8)


def test_shares_of_foreground_and_soft_edge() -> None:
    mask = _mask([[0, 255, 128, 127], [15, 16, 239, 240]])
    assert mask_metrics.foreground_share(mask) == pytest.approx(4 / 8)  # 255, 128, 239, 240
    assert mask_metrics.soft_share(mask) == pytest.approx(4 / 8)  # 128, 127, 16, 239


def test_mae_and_iou_against_truth() -> None:
    truth = _mask([[0, 255], [255, 0]])
    assert mask_metrics.mae(truth, truth) == 0.0
    assert mask_metrics.iou(truth, truth) == 1.0
    half = _mask([[0, 255], [0, 0]])
    assert mask_metrics.mae(half, truth) == pytest.approx(0.25)
    assert mask_metrics.iou(half, truth) == pytest.approx(0.5)
    empty = np.zeros((2, 2), np.uint8)
    assert mask_metrics.iou(empty, empty) == 1.0


def test_max_f_measure_finds_the_best_threshold() -> None:
    truth = _mask([[255, 255, 0, 0]])
    assert mask_metrics.max_f_measure(truth, truth) == pytest.approx(1.0)
    # a soft prediction ranking the two true pixels highest is perfect at some threshold
    assert mask_metrics.max_f_measure(_mask([[200, 90, 80, 10]]), truth) == pytest.approx(1.0)
    # one of two true pixels and one false one at every threshold that keeps the first:
    # precision 1/2, recall 1/2 -> F = 0.5; keeping all: P 1/2, R 1 -> F = 1.3*0.5/(0.15+1)
    score = mask_metrics.max_f_measure(_mask([[200, 0, 200, 0]]), truth)
    assert score == pytest.approx(max(0.5, 1.3 * 0.5 / 1.15))
    assert mask_metrics.max_f_measure(_mask([[255, 255, 0, 0]]), np.zeros((1, 4), np.uint8)) == 0


def test_agreement_and_bad_masks() -> None:
    a, b = _mask([[0, 255]]), _mask([[0, 0]])
    agreement = mask_metrics.Agreement.of(a, b)
    assert (agreement.mean_abs_diff, agreement.iou) == (pytest.approx(127.5), 0.0)
    assert str(agreement) == "mean |diff| 127.5/255, IoU 0.000"
    with pytest.raises(ValueError, match="HxW uint8 of one size"):
        mask_metrics.mae(a, np.zeros((2, 2), np.uint8))
    with pytest.raises(ValueError, match="HxW uint8"):
        mask_metrics.soft_share(a.astype(np.float32))
