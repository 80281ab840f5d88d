"""Result rows as tables: CSV columns in first-seen order, Markdown cells, multirun jobs in job-number order."""

from __future__ import annotations

from robust_nic.evaluation.outputs import write_rows_csv
from robust_nic.rows import column_union, markdown_table
from robust_nic.run_dir import job_dirs


def test_csv_header_is_the_union_of_row_keys_in_first_seen_order(tmp_path):
    rows = [{"image": "a", "psnr": 30.0}, {"image": "b", "bpp": 0.5, "psnr": 31.0}, {"note": "x"}]
    assert column_union(rows, first=["bpp"]) == ["bpp", "image", "psnr", "note"]
    path = write_rows_csv(rows, tmp_path / "rows.csv")
    assert path.read_text().splitlines() == ["image,psnr,bpp,note", "a,30.0,,", "b,31.0,0.5,", ",,,x"]


def test_markdown_table_formats_floats_and_escapes_cells():
    rows = [{"job": "0", "delta_psnr": 12.34567, "overrides": "a=1|2"}, {"job": "1"}]
    assert markdown_table(["job", "delta_psnr", "overrides"], rows, ".4g") == (
        "| job | delta_psnr | overrides |\n|---|---|---|\n| 0 | 12.35 | a=1\\|2 |\n| 1 |  |  |\n"
    )
    assert markdown_table(["a", "b"], [["x\ny", 0.5]]) == "| a | b |\n|---|---|\n| x y | 0.5 |\n"


def test_multirun_jobs_in_job_number_order(tmp_path):
    for name in ["10", "2", "0", "1", "11"]:
        (tmp_path / name).mkdir()
    (tmp_path / "multirun.yaml").write_text("")
    assert [p.name for p in job_dirs(tmp_path)] == ["0", "1", "2", "10", "11"]


def test_reports_list_a_multiruns_jobs_in_job_number_order(tmp_path):
    """find_runs reads a sweep's runs as the sweep numbered them: job 2 before job 10."""
    import json

    from robust_nic.evaluation.report.runs import find_runs

    for name in ["10", "2", "1"]:
        run = tmp_path / "sweep" / name
        run.mkdir(parents=True)
        (run / "config.yaml").write_text("model: {name: tiny, arch: tiny, quality: 3}\nattack: {name: none}\n")
        (run / "metrics.json").write_text(json.dumps({"clean/bpp": 1.0, "clean/psnr": 30.0}))
    assert [run.path.name for run in find_runs([tmp_path / "sweep"])] == ["1", "2", "10"]
