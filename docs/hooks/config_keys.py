"""MkDocs hook: the configuration reference's key tables, read from src/compkit/schema.py and hyper.py.

The pydantic models are parsed with ``ast``, not imported (the docs build needs neither compkit's dependencies
nor TensorFlow), so the tables are always those of the source being documented: every key, its type, its
default and the source's own comment on it. A page asks for them with the marker ``<!-- config-keys -->``.
"""

from __future__ import annotations

import ast
from pathlib import Path

SOURCES = [Path(__file__).resolve().parents[2] / "src" / "compkit" / name for name in ("schema.py", "hyper.py")]
MARK = "<!-- config-keys -->"
# (TOML table, model); Train's inherited Hyper keys come first, augment is its own table
SECTIONS = [("competition", "Competition"), ("competition.targets.<head>", "Head"), ("folds", "Folds"), ("train", "Train"), ("train.augment", "Augment"),
            ("tune", "Tune"), ("ensemble", "Ensemble"), ("pseudo", "Pseudo"), ("adversarial", "Adversarial"),
            ("ray", "Ray"), ("tracking", "Tracking"), ("bundle", "Bundle")]


def _cell(text: str) -> str:
    """Prose for a table cell: HTML-escaped (``<name>`` is text), no cell separator."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace("|", "\\|").replace("\n", " ")


def _code(text: str) -> str:
    """Code for a table cell: a union's ``|`` spelt ``or``, any other ``|`` escaped."""
    if text == "required":
        return text
    return "`" + text.replace(" | ", " or ").replace("|", "\\|").replace("\n", " ") + "`"


def _fields(cls: ast.ClassDef, lines: list[str]) -> list[tuple[str, str, str, str]]:
    """(key, type, default, comment) of each annotated field of ``cls``, in source order."""
    out = []
    for node in cls.body:
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        value, default = node.value, "required"
        if isinstance(value, ast.Call) and ast.unparse(value.func) == "Field":
            default = ast.unparse(value.args[0]) if value.args else "required"
            bounds = [ast.unparse(k) for k in value.keywords if k.arg in ("ge", "gt", "le", "lt", "min_length", "max_length")]
        elif value is not None:
            default, bounds = ast.unparse(value), []
        else:
            bounds = []
        line = lines[node.lineno - 1]
        comment = line.split("  # ", 1)[1].strip() if "  # " in line else ""
        if not comment:  # the comment lines right above the field
            above, i = [], node.lineno - 2
            while i >= 0 and lines[i].strip().startswith("#"):
                above.insert(0, lines[i].strip().lstrip("#").strip())
                i -= 1
            comment = " ".join(above)
        kind = ast.unparse(node.annotation) + (f" ({', '.join(bounds)})" if bounds else "")
        out.append((node.target.id, kind, default, comment))
    return out


def key_tables() -> str:
    classes = {}  # model name -> (its class node, its file's lines, its file's name)
    for source in SOURCES:
        lines = source.read_text(encoding="utf-8").splitlines()
        classes |= {node.name: (node, lines, source.name) for node in ast.parse("\n".join(lines)).body if isinstance(node, ast.ClassDef)}
    parts = []
    for table, model in SECTIONS:
        cls, lines, where = classes[model]
        fields = _fields(cls, lines)
        if model == "Train":
            fields = _fields(*classes["Hyper"][:2]) + fields
        fields = [f for f in fields if not (table == "train" and f[0] == "augment")]
        doc = (ast.get_docstring(cls) or "").split("\n\n")[0].replace("\n", " ")
        rows = "\n".join(f"| `{table}.{key}` | {_code(kind)} | {_code(default)} | {_cell(comment)} |"
                         for key, kind, default, comment in fields)
        parts.append(f"### `[{table}]`\n\n{doc} (`{model}` in `{where}`)\n\n| key | type | default | note |\n|---|---|---|---|\n{rows}\n")
    return "\n".join(parts)


def on_page_markdown(markdown: str, page, config, files) -> str:
    return markdown.replace(MARK, key_tables()) if MARK in markdown else markdown
