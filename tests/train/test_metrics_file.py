"""RUN_DIR/metrics.json: merged by key, written atomically, always valid JSON."""
import json
import math

from kinfield.train.evaluate import read_metrics, update_metrics


def test_update_merges_keys_and_writes_non_finite_values_as_null(tmp_path):
    update_metrics(tmp_path, "test", {"psnr": 27.4})
    update_metrics(tmp_path, "motion", {"epe_mean": 0.4, "jerk_rel_err": math.nan})
    data = json.loads((tmp_path / "metrics.json").read_text(), parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))
    assert data == {"test": {"psnr": 27.4}, "motion": {"epe_mean": 0.4, "jerk_rel_err": None}}
    assert not list(tmp_path.glob("*.tmp"))


def test_broken_metrics_file_is_replaced_not_fatal(tmp_path):
    (tmp_path / "metrics.json").write_text("{not json")
    assert read_metrics(tmp_path) == {}
    update_metrics(tmp_path, "test", {"psnr": 1.0})
    assert read_metrics(tmp_path) == {"test": {"psnr": 1.0}}
