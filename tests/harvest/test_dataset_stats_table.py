"""`revbot dataset stats` prints a table a person can read, one row per repository."""

from __future__ import annotations

from click.testing import CliRunner

from adapters.store import Store
from bot.examples import Example, ExampleComment

HUNK = "@@ -1,2 +1,3 @@\n def f():\n+    print(x)\n     return x"


def test_stats_is_a_table_with_one_row_per_repository(tmp_path):
    from harvest.cli import dataset

    db = tmp_path / "s.db"
    store = Store(db)
    store.upsert_examples(
        [
            Example(f"a{i}", "acme/app", i, "a.py", HUNK, [ExampleComment(3, "RIGHT", "Use the logger.")])
            for i in range(3)
        ]
        + [Example("b1", "acme/lib", 9, "b.py", HUNK, [])]
    )
    store.close()
    out = CliRunner().invoke(dataset, ["stats", "--db", str(db)])
    assert out.exit_code == 0, out.output
    lines = out.output.splitlines()
    assert "examples: 3 positive, 1 negative" in lines[0]
    header = lines[2].split()
    assert header[:4] == ["repository", "comments", "replies", "by"] and "positive" in header
    assert set(lines[3]) == {"-", " "}
    rows = {line.split()[0]: line.split() for line in lines[4:6]}
    positive, negative = header.index("positive") - 1, header.index("negative") - 1  # "by bots" is two words
    assert (rows["acme/app"][positive], rows["acme/app"][negative]) == ("3", "0")
    assert (rows["acme/lib"][positive], rows["acme/lib"][negative]) == ("0", "1")
    assert "{" not in out.output  # no dict printed as it is
