"""Smoothing + hysteresis -> segments (mlic_edge.runtime.segments). Expected values are worked out by
hand in the comments, never by calling the code under test."""
import csv

import numpy as np
import pytest

from mlic_edge.core.errors import ConfigError, DatasetError
from mlic_edge.runtime.segments import (
    Segment,
    SegmentTracker,
    read_segments,
    segments_from_scores,
    write_segments,
)

TIMES = [0.5 * i for i in range(20)]   # sampled frames every 0.5 s


def one_class(values, **options) -> list[Segment]:
    """Segments of a single class "cat" with threshold 0.5 over `values` at TIMES."""
    scores = np.asarray(values, dtype=np.float64)[:, None]   # (T, 1)
    return segments_from_scores(TIMES[:len(values)], scores, ["cat"], [0.5], **options)


def test_clean_step_with_default_ema():
    # EMA alpha 0.5: 0, 0, .5 (on: >= .5), .75, .875, .9375, .46875 (>= off .4: still on), .234 (off)
    segments = one_class([0, 0, 1, 1, 1, 1, 0, 0, 0, 0])
    assert segments == [Segment("cat", 1.0, 3.0, 1.0, 5)]


def test_update_returns_the_segment_on_the_frame_that_closes_it():
    tracker = SegmentTracker(["cat", "dog"], [0.5, 0.5])
    closed = []
    for i, value in enumerate([0, 0, 1, 1, 1, 1, 0, 0]):
        closed.append(tracker.update(TIMES[i], np.array([value, 0.0])))
    assert closed[:7] == [[]] * 7                                # still on at frame 6 (.46875)
    assert closed[7] == [Segment("cat", 1.0, 3.0, 1.0, 5)]       # frame 7: .234 < .4
    assert tracker.active == []
    assert tracker.finish() == []


def test_one_frame_dip_above_off_threshold_does_not_split():
    values = [0.1, 0.6, 0.7, 0.45, 0.8, 0.2, 0.1]
    # raw scores; on at .6 (frame 1); .45 stays above off = .5 - .1 = .4; .2 turns it off (frame 5)
    assert one_class(values, smoothing="none") == [Segment("cat", 0.5, 2.0, 0.8, 4)]
    # without hysteresis the dip splits it: frames 1-2 and frame 4
    assert one_class(values, smoothing="none", hysteresis=0.0) == [
        Segment("cat", 0.5, 1.0, 0.7, 2), Segment("cat", 2.0, 2.0, 0.8, 1)]


def test_one_frame_spike_with_median_smoothing_gives_nothing():
    spike = [0, 0, 0, 1, 0, 0, 0]
    assert one_class(spike, smoothing="median", window=3) == []   # medians of 3: all 0
    assert one_class(spike, smoothing="none") == [Segment("cat", 1.5, 1.5, 1.0, 1)]
    # a median, not a mean: the mean of 3 around the spike (1/3) would pass a 0.3 threshold
    scores = np.array(spike, dtype=np.float64)[:, None]
    assert segments_from_scores(TIMES[:7], scores, ["cat"], [0.3], smoothing="median") == []


def test_median_step_is_delayed_by_half_the_window():
    # medians of the last 3: 0, 0, 0, 1 (frame 3: on), 1, 1 ([1, 1, 0]), 0 (frame 6: off)
    segments = one_class([0, 0, 1, 1, 1, 0, 0], smoothing="median", window=3)
    assert segments == [Segment("cat", 1.5, 2.5, 1.0, 3)]   # peak over raw 1, 1, 0


def test_none_flickers_where_ema_does_not():
    values = [0.6, 0.45, 0.6, 0.45, 0.6, 0.45]
    # raw, no hysteresis: on, off, on, off, on, off
    assert one_class(values, smoothing="none", hysteresis=0.0) == [
        Segment("cat", 0.0, 0.0, 0.6, 1), Segment("cat", 1.0, 1.0, 0.6, 1), Segment("cat", 2.0, 2.0, 0.6, 1)]
    # EMA .6, .525, .5625, .50625, .553125, .5015625: never below .5 -> one segment to the end
    assert one_class(values, hysteresis=0.0) == [Segment("cat", 0.0, 2.5, 0.6, 6)]


def test_peak_score_is_the_raw_maximum_inside_the_segment():
    # EMA: 0, .45 (off), .7 (frame 2: on), .5, .25 (frame 4: off). Segment frames 2-3; raw .95, .3.
    # The raw .9 of frame 1 lies before the segment; the smoothed maximum would be .7.
    assert one_class([0.0, 0.9, 0.95, 0.3, 0.0, 0.0]) == [Segment("cat", 1.0, 1.5, 0.95, 2)]


def test_finish_closes_open_segments_and_active_lists_them():
    tracker = SegmentTracker(["cat", "dog", "owl"], [0.5, 0.3, 0.5], smoothing="none")
    assert tracker.update(0.0, np.array([0.9, 0.1, 0.0])) == []
    assert tracker.update(0.2, np.array([0.8, 0.35, 0.0])) == []
    assert tracker.active == ["cat", "dog"]
    assert tracker.finish() == [Segment("cat", 0.0, 0.2, 0.9, 2), Segment("dog", 0.2, 0.2, 0.35, 1)]
    assert tracker.active == []


def test_min_frames_drops_short_segments():
    # raw: on at frame 1 only (1 frame), then frames 3-5 (3 frames)
    assert one_class([0, 1, 0, 1, 1, 1, 0], smoothing="none", min_frames=2) == [Segment("cat", 1.5, 2.5, 1.0, 3)]


def test_low_threshold_still_turns_off():
    # on .05, hysteresis .1: off = max(.05 - .1, .05 / 2) = .025, so .01 ends the label
    segments = segments_from_scores([0.0, 1.0, 2.0], np.array([[0.1], [0.01], [0.01]]), ["cat"], [0.05],
                                    smoothing="none")
    assert segments == [Segment("cat", 0.0, 0.0, 0.1, 1)]


def test_per_class_thresholds_and_sorting_by_start_then_label():
    scores = np.array([[0.0, 0.7, 0.0],    # "b" (threshold .6) on
                       [0.6, 0.7, 0.6],    # "z" (.5) and "a" (.5) on at 1.0 s; "a" sorts before "z"
                       [0.0, 0.0, 0.0]])
    segments = segments_from_scores([0.0, 1.0, 2.0], scores, ["z", "b", "a"], [0.5, 0.6, 0.5], smoothing="none")
    assert segments == [Segment("b", 0.0, 1.0, 0.7, 2), Segment("a", 1.0, 1.0, 0.6, 1),
                        Segment("z", 1.0, 1.0, 0.6, 1)]


def test_csv_round_trip(tmp_path):
    path = tmp_path / "out" / "s.csv"
    write_segments(path, [Segment("cat", 1.23456, 2.0, 0.87654321, 5), Segment("a,b", 0.0, 0.5, 1.0, 2)])
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert rows == [["label", "start_s", "end_s", "peak_score", "frames"],
                    ["cat", "1.235", "2.000", "0.876543", "5"],
                    ["a,b", "0.000", "0.500", "1.000000", "2"]]
    assert read_segments(path) == [Segment("cat", 1.235, 2.0, 0.876543, 5), Segment("a,b", 0.0, 0.5, 1.0, 2)]
    assert [p.name for p in path.parent.iterdir()] == ["s.csv"]   # no temp file left behind


def test_read_segments_rejects_malformed_files(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("label,start_s,end_s,peak_score,frames\ncat,one,2,0.5,3\n", encoding="utf-8")
    with pytest.raises(DatasetError, match=r"bad.csv:2: "):
        read_segments(bad)
    with pytest.raises(DatasetError, match="no such segments file"):
        read_segments(tmp_path / "missing.csv")


@pytest.mark.parametrize("options, message", [
    ({"smoothing": "mean"}, "smoothing must be one of"),
    ({"alpha": 0.0}, "alpha"),
    ({"alpha": 1.5}, "alpha"),
    ({"window": 2}, "window"),
    ({"window": 0}, "window"),
    ({"hysteresis": 1.0}, "hysteresis"),
    ({"hysteresis": -0.1}, "hysteresis"),
    ({"min_frames": 0}, "min_frames"),
])
def test_invalid_options_give_config_error(options, message):
    with pytest.raises(ConfigError, match=message):
        SegmentTracker(["cat", "dog"], [0.5, 0.5], **options)


def test_thresholds_must_match_classes():
    with pytest.raises(ConfigError, match="1 thresholds for 2 classes"):
        SegmentTracker(["cat", "dog"], [0.5])
    with pytest.raises(ConfigError, match=r"\[0, 1\]"):
        SegmentTracker(["cat"], [1.5])
