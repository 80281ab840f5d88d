"""The documentation's generated parts: benchmark files carry their provenance, generated tables follow the code."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def gen_pages():
    spec = importlib.util.spec_from_file_location("gen_pages", ROOT / "docs" / "gen_pages.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_benchmark_result_says_how_where_and_when_it_was_made():
    gen = gen_pages()
    files = gen.benchmark_files()
    assert files
    for path in files:
        assert re.fullmatch(r"[a-z0-9_]+_(cpu|h200|[a-z0-9]+)\.json", path.name), path.name
        data = json.loads(path.read_text(encoding="utf-8"))
        assert not [k for k in gen.REQUIRED if k not in data], path.name
        assert re.fullmatch(r"\d{4}-\d\d-\d\d(, \d{4}-\d\d-\d\d)*", data["date"]), path.name
        for table in data["tables"]:
            assert all(len(row) == len(table["columns"]) for row in table["rows"]), path.name
    page = gen.benchmarks()
    assert all(f"bench/results/{p.name}" in page for p in files)


def test_metric_key_table_lists_every_declared_metric_and_the_naming_scheme():
    from robust_nic.evaluation.metric_keys import METRICS, RECORDED, RENAMED

    table = gen_pages().metric_keys()
    assert all(f"`test/adv/{m.name}`" in table for m in METRICS + RECORDED if m.attacked)
    assert all(f"`test/clean/{m.name}`" in table for m in METRICS + RECORDED if m.clean)
    assert all(f"| `{m.name}` | {m.label} |" in table for m in METRICS + RECORDED)
    assert "Naming scheme" in table and "`delta_<quantity>`" in table
    assert all(f"| `{old}` | `{new}` |" in table for old, new in RENAMED.items())


def test_every_page_in_the_nav_exists_and_every_generated_part_renders():
    gen = gen_pages()
    nav = re.findall(r"^\s+- [^:]+: (\S+\.md)$", (ROOT / "mkdocs.yml").read_text(encoding="utf-8"), re.M)
    assert "index.md" in nav
    assert [page for page in nav if not (ROOT / "docs" / page).exists()] == []
    for page in gen.GENERATORS:
        assert page in nav
        rendered = gen.render(page, (ROOT / "docs" / page).read_text(encoding="utf-8"))
        assert "<!-- generated" not in rendered


def test_record_result_stores_a_script_output_with_its_provenance(tmp_path):
    spec = importlib.util.spec_from_file_location("record_result", ROOT / "bench" / "record_result.py")
    record = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(record)
    raw = tmp_path / "raw.json"
    raw.write_text('{"args": {"threads": 1}, "rows": {"before": {"delta": NaN, "bpp": 0.9}, "fast": {"delta": 7.1, "bpp": 0.8}}}')
    path = record.main([str(raw), "--benchmark", "finetune_x", "--device", "cpu", "--title", "t", "--command", "python b.py",
                        "--machine", "m", "--results-dir", str(tmp_path)])
    assert path.name == "finetune_x_cpu.json"
    data = json.loads(path.read_text())
    assert not [k for k in gen_pages().REQUIRED if k not in data]
    assert data["tables"] == [{"caption": "rows", "columns": ["name", "delta", "bpp"],
                               "rows": [["before", None, 0.9], ["fast", 7.1, 0.8]]}]


def test_the_site_builds_strictly(tmp_path):
    """What `.ci/run` runs after the tests: a broken link, a missing page or a failing generated part fails."""
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocs_gen_files")
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                            cwd=ROOT, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "DISABLE_MKDOCS_2_WARNING": "true", "NO_MKDOCS_2_WARNING": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "site" / "benchmarks" / "index.html").exists()
