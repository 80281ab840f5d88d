"""The text a user reads speaks of the product, not of how it was made.

README, CHANGELOG, the documentation, the benchmarks and their results, the package (its Hydra configs
included) and the tests are scanned for words about the development process: numbered work sessions,
helpers, issue numbers, reviews, and how a machine was obtained. pytest's "session" fixture scope is the one
use of the word that is allowed. A link to another project's issue tracker (a URL) is not an issue number.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ["README.md", "CHANGELOG.md", "mkdocs.yml", "train.py", "evaluate.py", "paper.py", "docs", "bench", "src",
           "tests"]
SUFFIXES = {".md", ".py", ".yaml", ".yml", ".txt", ".json", ".sh", ".toml", ".csv", ".html", ".cfg"}
FORBIDDEN = re.compile(
    r"\bsessions?\b"  # numbered work sessions ("session 3", "session 6's BD-rate")
    r"|\bhelpers?\b"
    r"|\bissues?\s+#?\d+"  # "issue 13", "issues 3", "issue #54"
    r"|\breview(?:s|ed|er|ers|ing)?\b"
    r"|\blent\b|\bborrowed\b|\bdevice tool\b|\bagents?\b",
    re.IGNORECASE,
)
ALLOWED = re.compile(r"""scope\s*=\s*["']session["']""")  # pytest's fixture scope


def offending(text: str) -> list[str]:
    """The forbidden words of a text, each with its line number."""
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        for match in FORBIDDEN.finditer(ALLOWED.sub("", line)):
            found.append(f"{number}: {match.group(0)!r} in {line.strip()[:120]}")
    return found


def scanned_files() -> list[Path]:
    files = []
    for name in SCANNED:
        path = ROOT / name
        if path.is_file():
            files.append(path)
        elif path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in SUFFIXES)
    return [p for p in files if p.resolve() != Path(__file__).resolve() and "__pycache__" not in p.parts]


def test_product_text_has_no_development_history():
    problems = []
    for path in scanned_files():
        for line in offending(path.read_text(encoding="utf-8", errors="replace")):
            problems.append(f"{path.relative_to(ROOT)}:{line}")
    assert not problems, "words about how the project was built:\n" + "\n".join(problems)


@pytest.mark.parametrize(
    "text",
    ["measured in session 3", "Sessions 2-4", "see issue 13", "CompressAI issue #54", "a review finding",
     "reviewed by a helper", "on the lent GPU", "other agents' jobs"],
)
def test_scan_catches(text):
    assert offending(f"fine line\n{text}\n")


@pytest.mark.parametrize(
    "text",
    ['@pytest.fixture(scope="session")', "https://github.com/InterDigitalInc/CompressAI/issues/54",
     "issues are welcome", "the previous settings"],
)
def test_scan_allows(text):
    assert not offending(text)


def test_scan_fails_on_an_inserted_session_number(tmp_path):
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert not offending(readme)
    assert offending(readme + "\nMeasured in session 3.\n") == [
        f"{len(readme.splitlines()) + 2}: 'session' in Measured in session 3."
    ]
