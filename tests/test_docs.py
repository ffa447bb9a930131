"""The repository documents itself: citations point at docs/ inside it, and cited sections exist.

Docstrings and comments cite ``docs/reference.md §N`` (K-Net's equations, losses, inference
rules, checkpoint layouts) and ``docs/architecture.md §N`` (data flow, which file owns what).
These tests fail when a tracked file cites a document that is not in the repository, or cites
a section number that the cited document does not have.
"""
from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Set, Tuple

import pytest

from tests.helpers.paths import REPO_ROOT as REPO

DOCS = ("docs/reference.md", "docs/architecture.md")
THIS_FILE = "tests/test_docs.py"

# Documents that exist only outside the repository (split so that this file does not match).
FOREIGN_DOCUMENTS = (
    "knet_" + "reference.md",
    "d2_" + "conventions.md",
    "shared/" + "docs",
)

_HEADING = re.compile(r"^#{2,6} (\d+(?:\.\d+)*) ", re.MULTILINE)
_SECTION = re.compile(r"§(\d+(?:\.\d+)*)")
_DOC_MENTION = re.compile(r"docs/(?:reference|architecture)\.md")
_TEXT_SUFFIXES = {".py", ".md", ".yaml", ".yml", ".txt", ".toml", ".cfg", ".sh", ".ini", ""}


def tracked_text_files() -> List[Path]:
    """Files tracked by git (or, outside a git checkout, every non-hidden file) that are text."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True, text=True
        ).stdout
        names = [n for n in out.split("\0") if n]
    except (OSError, subprocess.CalledProcessError):
        names = [
            str(p.relative_to(REPO)) for p in REPO.rglob("*")
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(REPO).parts)
        ]
    paths = [REPO / n for n in names if Path(n).suffix in _TEXT_SUFFIXES]
    return [p for p in paths if p.is_file()]


def sections_of(markdown: str) -> Set[str]:
    """Section numbers of the numbered headings (``## 2 Training``, ``### 2.3 Losses``)."""
    return set(_HEADING.findall(markdown))


def citations_in_text(text: str) -> Iterator[Tuple[Optional[str], str, int]]:
    """``(document, section, line number)`` for every ``§N`` in ``text``.

    A ``§N`` belongs to the closest docs/ mention before it, at most one line break away (a
    citation may wrap): ``"(docs/reference.md §3, docs/architecture.md §9)"`` gives
    ``("docs/reference.md", "3", 1)`` and ``("docs/architecture.md", "9", 1)``. A ``§N`` with no
    such mention (``"reference §3"``) gives document ``None``.
    """
    mentions = list(_DOC_MENTION.finditer(text))
    for m in _SECTION.finditer(text):
        before = [d for d in mentions if d.end() <= m.start()]
        doc = None
        if before and text.count("\n", before[-1].end(), m.start()) <= 1:
            doc = before[-1].group(0)
        yield doc, m.group(1), text.count("\n", 0, m.start()) + 1


def missing_citations(
    files: List[Path], sections: Dict[str, Set[str]]
) -> Tuple[int, List[str]]:
    """(number of citations found, ``"path:line: problem"`` for each unresolvable one)."""
    found, missing = 0, []
    for path in files:
        rel = path.relative_to(REPO).as_posix() if path.is_relative_to(REPO) else str(path)
        if rel == THIS_FILE:
            continue
        for doc, number, lineno in citations_in_text(path.read_text(errors="replace")):
            if rel in DOCS:
                # reference.md cites itself; architecture.md cites it as "reference §N".
                doc = "docs/reference.md"
            found += 1
            if doc is None:
                missing.append(f"{rel}:{lineno}: §{number} does not name docs/reference.md "
                               "or docs/architecture.md")
            elif number not in sections[doc]:
                missing.append(f"{rel}:{lineno}: {doc} has no section §{number}")
    return found, missing


@pytest.fixture(scope="module")
def doc_sections() -> Dict[str, Set[str]]:
    return {doc: sections_of((REPO / doc).read_text()) for doc in DOCS}


def test_docs_have_numbered_sections(doc_sections):
    ref, arch = doc_sections["docs/reference.md"], doc_sections["docs/architecture.md"]
    # The topics the code cites: architecture, training, inference, checkpoints.
    assert {"1.1", "1.2", "1.3", "1.4", "1.5", "2.1", "2.2", "2.3", "2.4", "3"} <= ref
    assert {"4", "4.3"} <= ref
    assert {str(i) for i in range(1, 14)} <= arch


def test_no_file_cites_a_document_outside_the_repository():
    offenders = []
    for path in tracked_text_files():
        text = path.read_text(errors="replace")
        for lineno, line in enumerate(text.splitlines(), 1):
            for name in FOREIGN_DOCUMENTS:
                if name in line:
                    offenders.append(f"{path.relative_to(REPO)}:{lineno}: cites {name}")
    assert not offenders, "citations of documents outside the repository:\n" + "\n".join(
        offenders
    )


def test_every_cited_section_exists(doc_sections):
    found, missing = missing_citations(tracked_text_files(), doc_sections)
    # The model core cites the reference throughout; finding none means the scan is broken.
    assert found >= 30, found
    assert not missing, "cited sections that do not exist:\n" + "\n".join(missing)


def test_citation_parser_assigns_sections_to_the_closest_document():
    text = "post-processing (docs/reference.md §3, §3.2, docs/architecture.md §9).\n"
    text += "init (docs/reference.md\n    §1.5), see reference §2.1"
    assert list(citations_in_text(text)) == [
        ("docs/reference.md", "3", 1),
        ("docs/reference.md", "3.2", 1),
        ("docs/architecture.md", "9", 1),
        ("docs/reference.md", "1.5", 3),
        ("docs/reference.md", "2.1", 3),
    ]
    assert list(citations_in_text("see reference §3 elsewhere")) == [(None, "3", 1)]
    assert list(citations_in_text("docs/reference.md\n\n\n§3")) == [(None, "3", 4)]


def test_a_citation_of_a_missing_section_is_reported(tmp_path, doc_sections):
    bad = tmp_path / "module.py"
    bad.write_text('"""Loss (docs/reference.md §2.3, §9.9).\n\nMatcher: see reference §7."""\n')
    found, missing = missing_citations([bad], doc_sections)
    assert found == 3
    assert len(missing) == 2
    assert missing[0].endswith(":1: docs/reference.md has no section §9.9")
    assert missing[1].endswith(":3: §7 does not name docs/reference.md or docs/architecture.md")
