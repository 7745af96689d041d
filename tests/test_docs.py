"""The documentation holds together:

- every `.md` page a docstring, help text or comment of `flowlin` cites exists, and every
  `docs/theory.md §N(x)` section it cites is a heading of that page;
- every docstring example (a ```python block) runs as written, in a fresh namespace;
- the site builds with `mkdocs build --strict` (broken links, missing pages, bad API
  references fail it).
"""

import ast
import os
import pathlib
import re
import subprocess
import sys
import textwrap

import pytest


ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "flowlin"
#: Files the code writes (report names), not pages of the repository.
OUTPUT_FILES = {"report.md", "out/report.md"}
PAGE = re.compile(r"(?<![\w/.-])([\w./-]+\.md)\b(?:\s*§(\d+)(?:\(([a-h]))?)?")
FENCE = re.compile(r"```python\n(.*?)```", re.S)
#: Docstring examples too slow for every run (they still run in CI, which runs `slow` tests).
SLOW_EXAMPLES = {"flowlin.reproduce.reproduce"}


def sources() -> dict[str, str]:
    return {str(p.relative_to(ROOT)): p.read_text() for p in sorted(PACKAGE.rglob("*.py"))}


def theory_sections() -> tuple[set[str], set[str]]:
    """The numbered sections ("2") and their lettered subsections ("2a", "6e") of theory.md."""
    text = (ROOT / "docs" / "theory.md").read_text()
    numbers = set(re.findall(r"^## (\d+)\. ", text, re.M))
    letters = set()
    for n in numbers:
        body = text.split(f"\n## {n}. ", 1)[1].split("\n## ", 1)[0]
        letters |= {n + x for x in re.findall(r"^### \(([a-z])\) ", body, re.M)}
    return numbers, letters


def page_references() -> list[tuple[str, str, str | None, str | None]]:
    out = []
    for path, text in sources().items():
        for m in PAGE.finditer(text):
            out.append((path, m.group(1), m.group(2), m.group(3)))
    return out


def test_page_references_resolve():
    refs = page_references()
    assert len(refs) > 50  # positive control: the docstrings cite docs/theory.md often
    numbers, letters = theory_sections()
    assert {"1", "2", "3", "4", "5"} <= numbers and {"2a", "2g"} <= letters  # control
    bad = []
    for path, page, number, letter in refs:
        if page in OUTPUT_FILES:
            continue
        if not (ROOT / page).is_file():
            bad.append(f"{path}: {page} does not exist")
        elif page == "docs/theory.md" and number is not None:
            if number not in numbers or (letter and number + letter not in letters):
                bad.append(f"{path}: {page} §{number}({letter or ''}) is not a section")
    assert not bad, "\n".join(bad)


def test_page_reference_check_catches_a_missing_page():
    """The regex finds the forms the docstrings use (positive control for the test above)."""
    found = [m.groups() for m in PAGE.finditer("see docs/nowhere.md §2(c) and docs/theory.md §4")]
    assert found == [("docs/nowhere.md", "2", "c"), ("docs/theory.md", "4", None)]


def docstring_examples() -> list[tuple[str, str]]:
    """(qualified name, code) of every ```python block in a docstring of flowlin."""
    out = []
    for path, text in sources().items():
        module = path[:-3].replace("/", ".").removesuffix(".__init__")
        tree = ast.parse(text)
        nodes = [(module, tree)] + [
            (f"{module}.{n.name}", n)
            for n in ast.walk(tree)
            if isinstance(n, ast.FunctionDef | ast.ClassDef | ast.AsyncFunctionDef)
        ]
        for name, node in nodes:
            doc = ast.get_docstring(node, clean=True) or ""
            for i, block in enumerate(FENCE.findall(doc)):
                out.append((f"{name}[{i}]" if i else name, textwrap.dedent(block)))
    return out


EXAMPLES = docstring_examples()


def test_examples_found():
    assert len(EXAMPLES) >= 18


@pytest.mark.parametrize(
    "name, code",
    [
        pytest.param(n, c, marks=[pytest.mark.slow] if n in SLOW_EXAMPLES else [])
        for n, c in EXAMPLES
    ],
    ids=[n for n, _ in EXAMPLES],
)
def test_docstring_example_runs(name, code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # examples may write files (reproduce's flowlin-results/)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    exec(compile(code, f"<docstring example of {name}>", "exec"), {"__name__": "__example__"})


@pytest.mark.slow
def test_site_builds_strict(tmp_path):
    pytest.importorskip("mkdocs")
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "site" / "theory" / "index.html").is_file()
    api = (tmp_path / "site" / "api" / "index.html").read_text()
    assert 'id="flowlin.gradient_flow"' in api  # mkdocstrings rendered the API
