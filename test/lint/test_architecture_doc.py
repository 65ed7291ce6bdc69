"""docs/ARCHITECTURE.md stays true to the tree: every file or folder it names exists."""

from __future__ import annotations

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "ARCHITECTURE.md"
PATH = re.compile(r"(?<![\w/.])((?:lnn_control|barriernet|test|config|launch|scripts|bench|docs)/[\w./<>-]*)")


def _named_paths() -> list[str]:
    text = DOC.read_text()
    out = []
    for p in PATH.findall(text):
        p = p.rstrip(".,:;)")
        if "<" in p:  # a pattern such as config/<robot>.yaml
            continue
        out.append(p)
    return sorted(set(out))


def test_the_doc_names_paths() -> None:
    assert len(_named_paths()) > 30


def test_every_named_path_exists() -> None:
    missing = [p for p in _named_paths() if not (ROOT / p).exists()]
    assert not missing, f"docs/ARCHITECTURE.md names paths that do not exist: {missing}"


def test_every_package_folder_is_described() -> None:
    text = DOC.read_text()
    folders = [d.name for d in (ROOT / "lnn_control").iterdir() if (d / "__init__.py").is_file()]
    undocumented = [f for f in folders if f"lnn_control/{f}/" not in text]
    assert not undocumented, f"packages missing from docs/ARCHITECTURE.md: {undocumented}"
