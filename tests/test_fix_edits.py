"""The text machinery under every source fix: positions that agree with ast, edits applied
exactly, clashing fixes kept apart, atomic writes that refuse a changed file."""

import ast
import os
import stat

import pytest

from bnlint import files
from bnlint.edits import Edit, OverlappingEdits, apply_edits, compatible, span_of, split_lines
from bnlint.files import FileChanged, read_source, write_atomic

# characters str.splitlines() breaks lines at, but Python's tokenizer does not
NOT_LINE_BREAKS = "\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"


def edit(start, end, text, path="m.py"):
    return Edit(path, start, end, text, "BN001", "safe", "test")


def test_lines_and_columns_agree_with_ast_around_odd_characters():
    text = "".join(f"s{i} = '{ch}'  # {ch}\n" for i, ch in enumerate(NOT_LINE_BREAKS))
    text += "größe = f(1)\r\nlast = g(2)\rend = h(3)"
    lines = split_lines(text)
    assert "".join(lines) == text
    calls = [n for n in ast.walk(ast.parse(text)) if isinstance(n, ast.Call)]
    assert len(lines) == len(NOT_LINE_BREAKS) + 3
    for call in calls:
        (line, col), (end_line, end_col) = span_of(call, lines)
        assert lines[line - 1][col:end_col] == ast.get_source_segment(text, call)


def test_source_lines_match_ast_after_a_page_break(tmp_path):
    """A suppression comment is read from the line ast reports, also below a form feed."""
    path = tmp_path / "m.py"
    path.write_text("a = 1\n\x0c\nb = f()  # noqa: BN001\n", encoding="utf-8")
    call = next(n for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.Call))
    files.forget_files()
    assert files.source_line(str(path), call.lineno).endswith("# noqa: BN001")


def test_apply_edits_keeps_everything_else_and_the_files_line_endings():
    text = "x = f(a)\r\ny = f(b)\r\n"
    fixed = apply_edits(text, [
        edit((1, 7), (1, 7), ",\n    c"),
        edit((2, 6), (2, 7), "z"),
        edit((2, 6), (2, 7), "z"),  # the same fix found twice counts once
    ])
    assert fixed == "x = f(a,\r\n    c)\r\ny = f(z)\r\n"


def test_overlapping_edits_are_refused_and_clashing_fixes_kept_apart():
    first = (edit((1, 0), (1, 3), "abc"),)
    overlapping = (edit((1, 2), (1, 5), "xyz"),)
    insert = (edit((1, 0), (1, 0), "!"),)
    same_point = (edit((1, 0), (1, 0), "#"),)  # before or after "!"? unknown: a clash
    elsewhere = (edit((1, 2), (1, 5), "xyz", path="other.py"),)
    with pytest.raises(OverlappingEdits):
        apply_edits("0123456", [*first, *overlapping])
    kept, dropped = compatible([first, overlapping, insert, same_point, elsewhere])
    assert kept == [first, insert, elsewhere]
    assert dropped == [overlapping, same_point]


def test_write_atomic_refuses_a_changed_file_and_keeps_mode_and_endings(tmp_path):
    path = tmp_path / "m.py"
    path.write_bytes(b"a = 1\r\n")
    os.chmod(path, 0o640)
    before = read_source(path)
    assert before == "a = 1\r\n"
    write_atomic(path, before, "a = 2\r\n")
    assert path.read_bytes() == b"a = 2\r\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    with pytest.raises(FileChanged):
        write_atomic(path, before, "a = 3\r\n")
    assert path.read_bytes() == b"a = 2\r\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.py"]


def test_write_keeps_a_bom_and_a_declared_encoding(tmp_path):
    for name, raw in [("bom.py", b"\xef\xbb\xbfx = 1\n"),
                      ("latin.py", b"# -*- coding: latin-1 -*-\ns = 'caf\xe9'\n")]:
        path = tmp_path / name
        path.write_bytes(raw)
        text = read_source(path)
        write_atomic(path, text, text.replace("1", "2").replace("caf", "CAF"))
        assert path.read_bytes() == raw.replace(b"1", b"2").replace(b"caf", b"CAF")


def test_read_only_file_is_refused_and_left_alone(tmp_path):
    path = tmp_path / "model.py"
    path.write_text("x = 1\n")
    path.chmod(0o444)
    with pytest.raises(PermissionError, match="read-only"):
        write_atomic(path, "x = 1\n", "x = 2\n")
    assert path.read_text() == "x = 1\n"
    assert [p.name for p in tmp_path.iterdir()] == ["model.py"]
