"""The repository is self-contained: every `spec §N` citation resolves to a section of `docs/spec.md`.

The code cites the reference specification as `spec §N`, `spec §N.M, §K` and, for a bug of the reference, `§7.2 item K`
(or `items K–L`). The repository has one numbered document, so every section sign followed by a number is read as a
citation of `docs/spec.md`; a citation of any other document by number would fail here, which is the point: a reader
must be able to follow each one without files from outside the repository.
"""

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SPEC = REPO / "docs" / "spec.md"
# Where citations live; the top-level Markdown files are scanned as well.
CITING_DIRS = ("src", "examples", "benchmarks", "modeling_tests", "scripts", "docs")
TEXT_SUFFIXES = {".py", ".md", ".txt", ".toml", ".cfg", ".ini", ".sh", ".yaml", ".yml", ".json", ".jinja", ""}
SKIPPED_DIRS = {".git", ".venv", "venv", "build", "dist", "__pycache__", ".pytest_cache", ".ruff_cache", "outputs"}

SECTION_SIGN = "\u00a7"
_CITATION = re.compile(
    SECTION_SIGN + r"\s*(?P<section>\d+(?:\.\d+)*)(?:\s+items?\s+(?P<first>\d+)(?:\s*[\u2013-]\s*(?P<last>\d+))?)?"
)
_HEADING = re.compile(r"^#{1,6}\s+(?P<section>\d+(?:\.\d+)*)\.?\s")
_LIST_ITEM = re.compile(r"^(?P<item>\d+)\.\s")


def find_citations(text: str) -> list[tuple[str, int | None, int]]:
    """`(section, item or None, line number)` for each citation in `text`; `items 1–2` gives one entry per item."""
    citations = []
    for match in _CITATION.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        section, first, last = match["section"], match["first"], match["last"]
        if first is None:
            citations.append((section, None, line))
        else:
            for item in range(int(first), int(last or first) + 1):
                citations.append((section, item, line))
    return citations


def spec_sections(text: str) -> dict[str, set[int]]:
    """Section number → the numbers of the top-level numbered list items in that section's own text."""
    sections: dict[str, set[int]] = {}
    current = None
    for line in text.splitlines():
        heading = _HEADING.match(line)
        if heading:
            current = heading["section"]
            if current in sections:
                raise ValueError(f"docs/spec.md numbers two sections {current}")
            sections[current] = set()
        elif current is not None and (item := _LIST_ITEM.match(line)):
            sections[current].add(int(item["item"]))
    return sections


def unresolved(citations, sections: dict[str, set[int]]) -> list[str]:
    problems = []
    for section, item, where in citations:
        if section not in sections:
            problems.append(f"{where}: {SECTION_SIGN}{section} is not a section of docs/spec.md")
        elif item is not None and item not in sections[section]:
            problems.append(f"{where}: {SECTION_SIGN}{section} has no item {item}")
    return problems


def repository_text_files(roots):
    for root in roots:
        paths = [root] if root.is_file() else sorted(root.rglob("*"))
        for path in paths:
            relative = path.relative_to(REPO).parts
            if any(part in SKIPPED_DIRS or part.endswith(".egg-info") for part in relative[:-1]):
                continue
            if path.is_file() and path.suffix in TEXT_SUFFIXES and path.stat().st_size < 2_000_000:
                yield path


def test_spec_numbers_its_sections_like_the_citations_expect():
    sections = spec_sections(SPEC.read_text(encoding="utf-8"))
    for number in ["0", "1", "1.1", "1.5", "2", "2.4", "3.2", "6.2", "7.2", "10"]:
        assert number in sections
    assert sections["7.2"] == set(range(1, 14))  # the reference's 13 known bugs, cited as "§7.2 item K"


def test_every_citation_in_the_repository_resolves_to_a_spec_section():
    sections = spec_sections(SPEC.read_text(encoding="utf-8"))
    roots = [REPO / name for name in CITING_DIRS if (REPO / name).exists()] + sorted(REPO.glob("*.md"))
    problems, count = [], 0
    for path in repository_text_files(roots):
        citations = find_citations(path.read_text(encoding="utf-8", errors="replace"))
        count += len(citations)
        relative = path.relative_to(REPO)
        problems += [f"{relative}:{problem}" for problem in unresolved(citations, sections)]
    assert count > 200  # the scan did find the code's citations
    assert not problems, "\n".join(problems)


def test_a_citation_of_a_missing_section_or_item_is_reported():
    sections = spec_sections("## 1. Architecture\n### 1.2 Vision\n## 7. Issues\n### 7.2 Bugs\n1. one\n2. two\n")
    text = (
        f"ok (spec {SECTION_SIGN}1.2)\nbad (spec {SECTION_SIGN}1.3, {SECTION_SIGN}4)\n{SECTION_SIGN}7.2 items 2\u20133"
    )
    assert find_citations(text) == [("1.2", None, 1), ("1.3", None, 2), ("4", None, 2), ("7.2", 2, 3), ("7.2", 3, 3)]
    assert unresolved(find_citations(text), sections) == [
        f"2: {SECTION_SIGN}1.3 is not a section of docs/spec.md",
        f"2: {SECTION_SIGN}4 is not a section of docs/spec.md",
        f"3: {SECTION_SIGN}7.2 has no item 3",
    ]


def test_a_citation_split_over_two_lines_is_read_whole():
    assert find_citations(f"crashes in the reference ({SECTION_SIGN}7.2\n  item 4)") == [("7.2", 4, 1)]


def test_a_section_numbered_twice_is_an_error():
    with pytest.raises(ValueError, match="two sections 2.1"):
        spec_sections("### 2.1 MLM\n### 2.1 ITM\n")


# Paths and names of documents that live outside the repository (built from pieces so this file does not match).
OUTSIDE_REFERENCES = [
    "../" + "shared",
    "/work/" + "shared",
    "SCL" + "_SPEC",
    "HF_V5" + "_NOTES",
    "HF " + "notes " + "§",
]


def test_no_file_refers_to_documents_outside_the_repository():
    offenders = []
    for path in repository_text_files([REPO]):
        text = path.read_text(encoding="utf-8", errors="replace")
        for reference in OUTSIDE_REFERENCES:
            for match in re.finditer(re.escape(reference), text):
                offenders.append(f"{path.relative_to(REPO)}:{text.count(chr(10), 0, match.start()) + 1}: {reference}")
    assert not offenders, "\n".join(offenders)


def test_every_forward_argument_is_documented_for_auto_docstring():
    # `@auto_docstring` prints an "[ERROR]" line at import for each forward argument its docstring leaves out; the
    # generated docs would then silently lack that argument.
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-c", "import transformers_scl.modeling_scl"], capture_output=True, text=True, check=True
    )
    assert "[ERROR]" not in result.stdout + result.stderr, result.stdout + result.stderr

    from transformers_scl import modeling_scl

    public_heads = [
        modeling_scl.SCLVisionModel,
        modeling_scl.SCLModel,
        modeling_scl.SCLForPreTraining,
        modeling_scl.SCLForQuestionAnswering,
        modeling_scl.SCLForImagesAndTextClassification,
        modeling_scl.SCLForImageTextRetrieval,
        modeling_scl.SCLForZeroShotImageClassification,
    ]
    for head in public_heads:
        doc = head.forward.__doc__
        assert "Args:" in doc, head.__name__  # (the Returns section transformers adds varies across releases)
        if head is not modeling_scl.SCLVisionModel:  # transformers' own text for the arguments we leave to it
            assert "Mask to avoid performing attention on padding token indices" in doc, head.__name__
