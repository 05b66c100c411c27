"""Citations of docs/reference.md point at sections that exist."""

import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
REFERENCE = ROOT / "docs" / "reference.md"
# Where the code and the user documentation cite the reference.
CITING = ("fcn_jax", "configs", "benchmarks", "tools", "tests", "docs",
          "README.md")
SUFFIXES = (".py", ".md", ".sh")
# A citation: the file name, optional closing backtick, then one or more
# section numbers, possibly across a line break inside a comment and joined
# by "-", "/", "," or "and" ("§2-§4", "§3, §6.2").
CITATION = re.compile(
    r"docs/reference\.md`?[\s#]*"
    r"(§\d+(?:\.\d+)*(?:\s*(?:-|/|,|and)\s*§\d+(?:\.\d+)*)*)")
SECTION = re.compile(r"§(\d+(?:\.\d+)*)")
HEADING = re.compile(r"^#{2,4} (\d+(?:\.\d+)*)\.? ", re.MULTILINE)


def _citing_files():
  for name in CITING:
    path = ROOT / name
    files = [path] if path.is_file() else sorted(path.rglob("*"))
    for file in files:
      if (file.suffix in SUFFIXES and file.is_file()
          and file != REFERENCE and "fixtures" not in file.parts):
        yield file


def _cited_sections():
  """``{section: [file:line, ...]}`` for every citation in the repository."""
  cited = {}
  for file in _citing_files():
    text = file.read_text(encoding="utf-8")
    for match in CITATION.finditer(text):
      line = text.count("\n", 0, match.start()) + 1
      where = f"{file.relative_to(ROOT)}:{line}"
      for section in SECTION.findall(match.group(1)):
        cited.setdefault(section, []).append(where)
  return cited


def test_the_citation_pattern_reads_every_form():
  text = ("(docs/reference.md §2-§4) `docs/reference.md` §10 "
          "(docs/reference.md\n  # §6.2) docs/reference.md §3, §6.2.")
  found = [SECTION.findall(m.group(1)) for m in CITATION.finditer(text)]
  assert found == [["2", "4"], ["10"], ["6.2"], ["3", "6.2"]]


def test_every_cited_section_is_a_heading_of_the_reference():
  headings = set(HEADING.findall(REFERENCE.read_text(encoding="utf-8")))
  cited = _cited_sections()
  assert len(cited) >= 10, f"too few citations found: {sorted(cited)}"
  missing = {section: places for section, places in cited.items()
             if section not in headings}
  assert not missing, f"cited sections missing from {REFERENCE}: {missing}"


def test_reference_sections_are_numbered_in_order():
  numbers = [tuple(int(part) for part in heading.split("."))
             for heading in HEADING.findall(REFERENCE.read_text("utf-8"))]
  assert numbers == sorted(numbers)
  assert len(numbers) == len(set(numbers))
  assert [n[0] for n in numbers if len(n) == 1] == list(range(15))


def test_nothing_cites_the_unshipped_spec():
  this_file = pathlib.Path(__file__).resolve()
  stale = [str(file.relative_to(ROOT)) for file in _citing_files()
           if file != this_file and "FCN_SPEC" in file.read_text("utf-8")]
  assert not stale, f"these files still cite FCN_SPEC.md: {stale}"
