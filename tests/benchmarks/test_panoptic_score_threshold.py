"""benchmarks/panoptic_score_threshold.py: the choice rule and the command line."""
import pytest

from benchmarks.panoptic_score_threshold import THRESHOLDS, choose_threshold, json_name, parse_args


def test_choose_threshold_takes_the_best_mean_pq_th():
    assert choose_threshold({0.1: [20.0, 10.0], 0.3: [14.0, 14.0], 0.2: [16.0, 13.0]}) == 0.1
    assert choose_threshold({0.1: [10.0, 10.0], 0.3: [12.0, 9.0]}) == 0.3


def test_choose_threshold_breaks_ties_towards_the_official_value():
    assert choose_threshold({0.05: [10.0], 0.25: [10.0], 0.4: [10.0]}) == 0.25
    with pytest.raises(ValueError):
        choose_threshold({})


def test_parse_args_refuses_missing_weights_and_a_grid_without_the_official_value(tmp_path):
    weights = tmp_path / "model_final.pth"
    weights.write_bytes(b"")
    a = parse_args(["--weights", str(weights), "--output", str(tmp_path / "out")])
    assert 0.3 in a.thresholds and a.tune_images == 200
    with pytest.raises(SystemExit):
        parse_args(["--weights", str(tmp_path / "nope.pth"), "--output", str(tmp_path)])
    with pytest.raises(SystemExit):
        parse_args(["--weights", str(weights), "--output", str(tmp_path),
                    "--thresholds", "0.1", "0.2"])
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "panoptic_score_threshold.json").write_text("{}")
    with pytest.raises(SystemExit):  # an earlier record is never overwritten
        parse_args(["--weights", str(weights), "--output", str(tmp_path / "out")])


def test_choose_threshold_breaks_ties_towards_the_given_official_value():
    assert choose_threshold({0.4: [10.0], 0.6: [10.0], 0.8: [10.0]}, official=0.6) == 0.6
    assert choose_threshold({0.4: [10.0], 0.8: [10.0]}, official=0.7) == 0.8


def test_parse_args_overlap_and_mask_thresholds_use_their_own_grid_and_file(tmp_path):
    weights = tmp_path / "model_final.pth"
    weights.write_bytes(b"")
    a = parse_args(["--weights", str(weights), "--output", str(tmp_path / "o"),
                    "--threshold", "overlap"])
    assert a.thresholds == list(THRESHOLDS["overlap"].grid) and 0.6 in a.thresholds
    assert THRESHOLDS["overlap"].attribute == "overlap_threshold"
    a = parse_args(["--weights", str(weights), "--output", str(tmp_path / "o"),
                    "--threshold", "mask"])
    assert 0.5 in a.thresholds and THRESHOLDS["mask"].attribute == "mask_threshold"
    with pytest.raises(SystemExit):  # a grid without the official overlap threshold
        parse_args(["--weights", str(weights), "--output", str(tmp_path / "o"),
                    "--threshold", "overlap", "--thresholds", "0.3", "0.5"])
    with pytest.raises(SystemExit):  # a fraction above 1
        parse_args(["--weights", str(weights), "--output", str(tmp_path / "o"),
                    "--threshold", "overlap", "--thresholds", "0.6", "1.5"])
    assert json_name("score") == "panoptic_score_threshold.json"
    assert json_name("overlap") == "panoptic_overlap_threshold.json"
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "panoptic_overlap_threshold.json").write_text("{}")
    with pytest.raises(SystemExit):  # an earlier record is never overwritten
        parse_args(["--weights", str(weights), "--output", str(tmp_path / "o"),
                    "--threshold", "overlap"])
    # the score threshold's record does not block the overlap one, and the reverse
    assert parse_args(["--weights", str(weights), "--output", str(tmp_path / "o")]).thresholds
