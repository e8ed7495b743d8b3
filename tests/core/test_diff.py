"""bot.diff against the real diffs in ../shared/fixtures/diffs and hand-made edge cases."""

from __future__ import annotations

import time

import pytest

from bot.diff import LEFT, RIGHT, Hunk, parse_diff, parse_hunk, parse_patch
from bot.errors import DiffError

# What every fixture is: (path, old_path, status, is_binary, number of hunks) per file.
EXPECTED = {
    "binary.diff": [("1x1.png", None, "added", True, 0)],
    "bzr.diff": [
        ("added_file", None, "added", False, 1),
        ("modified_file", "modified_file", "modified", False, 1),
        ("removed_file", "removed_file", "deleted", False, 1),
    ],
    "debdiff.diff": [
        ("new/added.txt", None, "added", False, 1),
        ("/t/p2/a.png", "/t/p1/a.png", "modified", True, 0),
        ("/t/p2/b.png", "/t/p1/b.png", "modified", True, 0),
    ],
    "git.diff": [
        ("added_file", None, "added", False, 1),
        ("modified_file", "modified_file", "modified", False, 1),
        ("removed_file", "removed_file", "deleted", False, 1),
    ],
    "git_cr.diff": [("src/test/org/apache/commons/math/util/ExpandableDoubleArrayTest.java", None, "added", False, 1)],
    "git_delete.diff": [("somefile.c", "somefile.c", "deleted", False, 1)],
    "git_filenames_with_spaces.diff": [("has spaces/t.sql", None, "added", False, 1)],
    "git_filenames_with_spaces_prefix.diff": [("dst://foo bar/baz", None, "added", False, 1)],
    "git_no_prefix.diff": [
        ("file1", "file1", "deleted", False, 1),
        ("file2", "file2", "modified", False, 2),
        ("file3", None, "added", False, 1),
    ],
    "git_quoted_filename.diff": [("A \u00e2 B.py", None, "added", False, 1)],
    "git_quoted_filename_with_spaces.diff": [
        ("docs/develop/Bug \u6392\u67e5.md", "docs/develop/Bug \u6392\u67e5.md", "modified", False, 1)
    ],
    "git_rename.diff": [
        ("moved", "added", "renamed", False, 1),
        ("newfile", "oldfile", "renamed", False, 1),
        ("sub/otherfile", "sub/onefile", "renamed", False, 0),
    ],
    "git_symlink.diff": [("bin/check", None, "added", False, 1)],
    "hg.diff": [
        ("added_file", None, "added", False, 1),
        ("modified_file", "modified_file", "modified", False, 1),
        ("removed_file", "removed_file", "deleted", False, 1),
    ],
    "sample0.diff": [
        ("/path/to/new", "/path/to/original", "modified", False, 3),
        ("/path/to/another_new", None, "added", False, 1),
        ("/path/to/existing", "/path/to/existing", "deleted", False, 1),
    ],
    "sample3.diff": [
        ("added_file", None, "added", False, 1),
        ("modified_file", "modified_file", "modified", False, 1),
        ("removed_file", "removed_file", "deleted", False, 1),
    ],
    "sample4.diff": [
        ("added_file", None, "added", False, 1),
        ("modified_file", "modified_file", "modified", False, 1),
        ("removed_file", "removed_file", "deleted", False, 1),
    ],
    "sample5.diff": [
        ("modified_file1", "modified_file1", "modified", False, 1),
        ("modified_file2", "modified_file2", "modified", False, 1),
    ],
    "sample8.diff": [
        ("boo.bin", None, "added", False, 0),
        ("foo.bin", None, "added", True, 0),
        ("bar.bin", "bar.bin", "modified", True, 0),
        ("baz.bin", "baz.bin", "deleted", True, 0),
        ("fuz.bin", None, "added", False, 0),
    ],
    "svn.diff": [
        ("modified_file", "modified_file", "modified", False, 1),
        ("removed_file", "removed_file", "deleted", False, 1),
        ("added_file", None, "added", False, 1),
    ],
}

# The malformed ones: (line of the error, words in the message, the hunk and file it names).
# sample1: hunk 2 announces 13 new lines but holds 10 before the next @@ header.
# sample2: an hg export cut off in its last hunk (one old and one new line missing).
# sample6: hunk 2 runs past its header (its context goes on after the 16 old lines).
# sample7: the diff ends inside hunk 2.
MALFORMED = {
    "sample1.diff": (32, "ends early", "#2 of /path/to/new: @@ -5,16 +11,13 @@"),
    "sample2.diff": (53, "diff ends inside a hunk", "#1 of js/src/jsfriendapi.cpp: @@ -527,16 +527,24 @@"),
    "sample6.diff": (32, "more old-file lines than its header says", "#2 of /path/to/new: @@ -5,16 +11,13 @@"),
    "sample7.diff": (29, "diff ends inside a hunk", "#2 of /path/to/new: @@ -5,16 +11,13 @@"),
}


def test_every_fixture_is_known(shared_dir):
    names = {p.name for p in (shared_dir / "fixtures" / "diffs").glob("*.diff")}
    assert names == set(EXPECTED) | set(MALFORMED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture_parses(shared_dir, name):
    path = shared_dir / "fixtures" / "diffs" / name
    diff = parse_diff(path.read_bytes(), str(path))
    got = [(f.path, f.old_path, f.status, f.is_binary, len(f.hunks)) for f in diff]
    assert got == EXPECTED[name]
    for f in diff:
        for hunk in f.hunks:  # every hunk holds exactly the lines its header announces
            assert sum(1 for ln in hunk.lines if ln.kind in "- ") == hunk.old_len
            assert sum(1 for ln in hunk.lines if ln.kind in "+ ") == hunk.new_len


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_fixture_fails_cleanly(shared_dir, name):
    path = shared_dir / "fixtures" / "diffs" / name
    line, words, hunk = MALFORMED[name]
    with pytest.raises(DiffError) as info:
        parse_diff(path.read_bytes(), str(path))
    err = info.value
    assert err.source == str(path) and err.line == line and err.hunk.startswith(hunk)
    assert str(err).startswith(f"{path}:{line}: ") and words in str(err) and hunk in str(err)


def test_rename_keeps_both_paths_and_full_directory(shared_dir):
    diff = parse_diff((shared_dir / "fixtures/diffs/git_rename.diff").read_bytes())
    moved = diff.file("moved")
    assert moved.old_path == "added" and moved.status == "renamed"
    assert moved.is_commentable(12, RIGHT) and moved.is_commentable(12, LEFT)
    # "rename from onefile" under a header naming a/sub/onefile: the header's full path wins
    assert diff.file("sub/otherfile").old_path == "sub/onefile"


def test_binary_symlink_deleted_new(shared_dir):
    binary = parse_diff((shared_dir / "fixtures/diffs/binary.diff").read_bytes())
    assert [f.path for f in binary.binary_files] == ["1x1.png"] and binary.files[0].hunks == []
    link = parse_diff((shared_dir / "fixtures/diffs/git_symlink.diff").read_bytes()).files[0]
    assert link.is_symlink and link.new_mode == "120000" and link.status == "added"
    gone = parse_diff((shared_dir / "fixtures/diffs/git_delete.diff").read_bytes()).files[0]
    assert gone.status == "deleted" and gone.removed == 10 and gone.added == 0
    assert gone.is_commentable(6, LEFT) and not gone.is_commentable(6, RIGHT)
    new = parse_diff((shared_dir / "fixtures/diffs/git.diff").read_bytes()).file("added_file")
    assert new.status == "added" and new.old_path is None and new.added == 4


def test_cr_inside_a_line_stays_one_line(shared_dir):
    diff = parse_diff((shared_dir / "fixtures/diffs/git_cr.diff").read_bytes())
    hunk = diff.files[0].hunks[0]
    assert len(hunk.lines) == 3
    assert "\r" in hunk.lines[0].text and hunk.lines[0].text.endswith('text diff file"')
    assert hunk.lines[1].text == ' "This has no CR"'


def test_crlf_line_ends_are_dropped_not_kept_as_text(shared_dir):
    diff = parse_diff((shared_dir / "fixtures/diffs/sample4.diff").read_bytes())
    texts = [ln.text for f in diff for h in f.hunks for ln in h.lines]
    assert "This is now updated." in texts and not any(t.endswith("\r") for t in texts)


def test_quoted_and_spaced_paths(shared_dir):
    quoted = parse_diff((shared_dir / "fixtures/diffs/git_quoted_filename_with_spaces.diff").read_bytes())
    assert quoted.is_commentable("docs/develop/Bug \u6392\u67e5.md", 1, RIGHT)
    spaced = parse_diff((shared_dir / "fixtures/diffs/git_filenames_with_spaces.diff").read_bytes())
    assert spaced.files[0].path == "has spaces/t.sql"


def test_no_newline_marker_attaches_to_the_line_before(shared_dir):
    f = parse_diff((shared_dir / "fixtures/diffs/git.diff").read_bytes()).file("modified_file")
    last = f.hunks[0].lines[-1]
    assert last.text == "This will stay." and last.no_newline
    assert not any(ln.text.startswith("\\") for ln in f.hunks[0].lines)
    assert f.hunks[0].text().endswith("This will stay.\n\\ No newline at end of file")


def test_is_commentable_exact_lines(shared_dir):
    diff = parse_diff((shared_dir / "fixtures/diffs/git.diff").read_bytes())
    path = "modified_file"
    # @@ -1,5 +1,7 @@: context old 1-2 = new 1-2, deleted old 3, added new 3-5, context old 4-5 = new 6-7
    for line in (1, 2, 3, 4, 5, 6, 7):
        assert diff.is_commentable(path, line, RIGHT), line
    for line in (1, 2, 3, 4, 5):
        assert diff.is_commentable(path, line, LEFT), line
    assert not diff.is_commentable(path, 8, RIGHT)
    assert not diff.is_commentable(path, 6, LEFT)
    assert not diff.is_commentable(path, 0, RIGHT)
    assert not diff.is_commentable("no_such_file", 1, RIGHT)
    assert diff.file(path).hunk_for(4, RIGHT) is diff.file(path).hunks[0]
    assert diff.file(path).hunk_for(9, RIGHT) is None


def test_git_format_patch_with_mail_signature():
    text = (
        "From 1234 Mon Sep 17 00:00:00 2001\nSubject: [PATCH] x\n---\n a | 1 +\n\n"
        "diff --git a/a b/a\nindex 1..2 100644\n--- a/a\n+++ b/a\n@@ -1 +1,2 @@\n x\n+y\n-- \n2.40.0\n\n"
    )
    diff = parse_diff(text)
    assert [f.path for f in diff] == ["a"] and diff.is_commentable("a", 2, RIGHT)


def test_patch_string_from_the_pulls_files_api():
    patch = "@@ -1,3 +1,4 @@\n import os\n+import re\n import sys\n \n@@ -10,2 +11,2 @@ def f():\n-    a = 1\n+    a = 2\n     return a"
    f = parse_patch(patch, "src/app.py")
    assert [h.header for h in f.hunks] == ["@@ -1,3 +1,4 @@", "@@ -10,2 +11,2 @@ def f():"]
    assert f.is_commentable(2, RIGHT) and f.is_commentable(10, LEFT) and f.is_commentable(12, RIGHT)
    assert not f.is_commentable(5, RIGHT)
    assert parse_patch(None, "img.png").hunks == []  # GitHub omits the patch of binary files
    assert parse_patch("", "x", status="added").old_path is None
    with pytest.raises(DiffError, match="expected a hunk header"):
        parse_patch("garbage\n@@ -1 +1 @@\n-a\n+b", "x.py")


def test_truncated_diff_hunk_of_a_review_comment():
    # GitHub's diff_hunk stops at the commented line: fewer lines than the header announces
    hunk = parse_hunk("@@ -10,7 +10,8 @@ class A:\n     def f(self):\n-        return 1\n+        return 2")
    assert [ln.kind for ln in hunk.lines] == [" ", "-", "+"]
    assert hunk.lines[-1].new_no == 11 and hunk.is_commentable(11, RIGHT) and hunk.is_commentable(11, LEFT)
    with pytest.raises(DiffError, match="hunk header"):
        parse_hunk("no header here")
    with pytest.raises(DiffError, match="diff ends inside a hunk"):
        parse_hunk("@@ -1,3 +1,3 @@\n a", strict=True)


def test_non_utf8_bytes_are_replaced_and_noted():
    data = b"diff --git a/x b/x\n--- a/x\n+++ b/x\n@@ -1 +1 @@\n-caf\xe9\n+caf\xc3\xa9\n"
    diff = parse_diff(data, "latin.diff")
    assert diff.files[0].hunks[0].lines[0].text == "caf\ufffd"
    assert diff.files[0].hunks[0].lines[1].text == "caf\u00e9"
    assert len(diff.warnings) == 1 and "latin.diff" in diff.warnings[0] and "UTF-8" in diff.warnings[0]


def test_split_and_sub_hunk_keep_line_numbers():
    hunk = parse_hunk("@@ -1,4 +1,5 @@\n a\n-b\n+B\n+C\n c\n d")
    pieces = hunk.split(2)
    assert [len(p.lines) for p in pieces] == [2, 2, 2]
    assert [ln for p in pieces for ln in p.lines] == hunk.lines
    assert pieces[1].header == "@@ -2,0 +2,2 @@"  # insert-only piece: old start is the line before
    for p in pieces:
        assert parse_hunk(p.text(), strict=True).lines == p.lines  # each piece is a valid hunk
    assert hunk.sub_hunk(1, 3).anchors == {(2, LEFT), (2, RIGHT)}
    with pytest.raises(ValueError):
        hunk.sub_hunk(3, 3)


def test_fifty_thousand_line_diff_parses_in_bounded_time():
    files = []
    for f in range(500):
        body = "".join(f"+line {i} of file {f}\n" for i in range(100))
        files.append(
            f"diff --git a/src/f{f}.py b/src/f{f}.py\nnew file mode 100644\n--- /dev/null\n+++ b/src/f{f}.py\n"
            f"@@ -0,0 +1,100 @@\n{body}"
        )
    text = "".join(files)
    assert text.count("\n") > 50_000
    start = time.perf_counter()
    diff = parse_diff(text)
    assert time.perf_counter() - start < 10
    assert len(diff) == 500 and diff.is_commentable("src/f499.py", 100, RIGHT)


def test_hunk_text_round_trips():
    text = "@@ -3,3 +3,3 @@ def f():\n a\n-b\n+c\n d"
    hunk = parse_hunk(text, strict=True)
    assert isinstance(hunk, Hunk) and hunk.text() == text


# --------------------------------------------------------------------------- input that is not a good diff


@pytest.mark.parametrize(
    "text, line",
    [
        (
            'diff --git "a/x\\777.py" "b/x\\777.py"\nnew file mode 100644\n--- /dev/null\n+++ "b/x\\777.py"\n'
            "@@ -0,0 +1 @@\n+a\n",
            1,
        ),
        ('--- "a/x.py"\n+++ "b/x\\777.py"\n@@ -1 +1 @@\n-a\n+b\n', 2),
        ('diff --git a/x.py b/x.py\nrename from x.py\nrename to "y\\400.py"\n', 3),
    ],
)
def test_an_octal_escape_beyond_a_byte_is_a_clear_error(text, line):
    with pytest.raises(DiffError) as info:
        parse_diff(text, "bad.diff")
    assert info.value.line == line and str(info.value).startswith(f"bad.diff:{line}: bad escape \\")
    assert "quoted file name" in str(info.value)


def test_a_malformed_hunk_header_is_an_error_naming_its_line():
    text = "diff --git a/x.py b/x.py\n--- a/x.py\n+++ b/x.py\n@@ -1,3 +1,4 @\n a\n+b\n c\n d\n"
    with pytest.raises(DiffError) as info:
        parse_diff(text, "bad.diff")
    assert info.value.line == 4 and "malformed hunk header of x.py: '@@ -1,3 +1,4 @'" in str(info.value)
    with pytest.raises(DiffError, match=r"bad.diff:1: malformed hunk header: '@@ -1 \+1'"):
        parse_diff("@@ -1 +1\n-a\n+b\n", "bad.diff")
    later = "--- a/x\n+++ b/x\n@@ -1 +1 @@\n-a\n+b\n@@ -7,2 +7,2\n-c\n+d\n"
    with pytest.raises(DiffError, match=r"bad.diff:6: malformed hunk header of x"):
        parse_diff(later, "bad.diff")


def test_text_that_is_not_a_diff_is_refused_and_empty_text_is_an_empty_diff(shared_dir):
    readme = "# widgets\n\nA library.\n\n- one\n+ two\n"
    with pytest.raises(DiffError) as info:
        parse_diff(readme, "README.md")
    assert str(info.value).startswith("README.md:1: not a unified diff") and "'# widgets'" in str(info.value)
    assert parse_diff("", "empty.diff").files == [] and parse_diff("\n\n", "blank.diff").files == []
    assert parse_diff("Only in a: x.py\nCommon subdirectories: a/s and b/s\n").files == []  # diff -r, no changes
    for name in ("binary.diff", "sample8.diff", "git_rename.diff"):  # nothing or little to review is still a diff
        assert parse_diff((shared_dir / "fixtures" / "diffs" / name).read_bytes()).files
