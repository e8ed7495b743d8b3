"""The per-repo .revbot.yml (the environment's settings: test_settings.py)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from adapters.repo_config import find_repo_config, load_repo_config
from bot.config import DEFAULT_IGNORES, RepoConfig, components_match, glob_components, path_matches
from bot.errors import DataError, UsageError


def test_defaults_and_a_full_file():
    assert RepoConfig.from_yaml("") == RepoConfig() == RepoConfig.from_yaml("# only a comment\n")
    cfg = RepoConfig.from_yaml(
        "enabled: false\nignore_paths:\n  - docs/**\n  - '*.md'\ndefault_ignores: false\nmax_comments: 4\n"
        "max_comments_per_file: 1\nskip_drafts: false\nmodel_version: 3\n"
    )
    assert cfg == RepoConfig(False, ("docs/**", "*.md"), False, 4, 1, False, "v3")
    assert cfg.all_ignores == ("docs/**", "*.md")
    assert RepoConfig.from_yaml("ignore_paths: 'gen/'").ignore_paths == ("gen/",)


@pytest.mark.parametrize(
    "text, line, words",
    [
        ("max_comments: 3\nmax_coments: 4\n", 2, "unknown key 'max_coments' (did you mean 'max_comments'?)"),
        ("max_comments: lots\n", 1, "'max_comments' must be a whole number"),
        ("enabled: 1\n", 1, "'enabled' must be true or false, got 1 (integer)"),
        ("max_comments_per_file: true\n", 1, "'max_comments_per_file' must be a whole number"),
        ("max_comments: -2\n", 1, "'max_comments' must be a whole number, 0 or more"),
        ("ignore_paths: [1, 2]\n", 1, "'ignore_paths' must be a list of path globs"),
        ("ignore_paths:\n  - ok\n  - {a: b}\n", 2, "'ignore_paths' must be a list"),
        ("model_version: [v1]\n", 1, "'model_version' must be a model version"),
        ("enabled: true\nmax_comments: [1,\n  2\nskip_drafts: false\n", 4, "invalid YAML"),
        ("enabled: true\n\tmax_comments: 3\n", 2, "invalid YAML"),
        ("- just\n- a list\n", 1, "expected a mapping"),
        ("enabled: true\nenabled: false\n", 2, "'enabled' appears twice"),
        ("enabled: !!python/object/apply:os.system [ls]\n", 1, "invalid value for 'enabled'"),
    ],
)
def test_errors_name_the_file_the_line_and_the_key(text, line, words):
    with pytest.raises(DataError) as info:
        RepoConfig.from_yaml(text, source="repo/.revbot.yml")
    assert str(info.value).startswith(f"repo/.revbot.yml:{line}: ") and words in str(info.value)
    assert "Traceback" not in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize(
    "path, pattern, expected",
    [
        ("vendor/lib.go", "vendor/", True),
        ("a/b/vendor/lib.go", "vendor/", True),
        ("vendor", "vendor/", False),  # a file named vendor is not the directory
        ("src/vendored.py", "vendor/", False),
        ("web/app.min.js", "*.min.js", True),
        ("web/app.js", "*.min.js", False),
        ("docs/a/b.md", "docs/**", True),
        ("src/docs/a.md", "docs/**", False),  # a slash inside anchors the pattern at the root
        ("setup.py", "/setup.py", True),
        ("pkg/setup.py", "/setup.py", False),
        ("src/a.py", "src/*.py", True),
        ("src/sub/a.py", "src/*.py", False),
        ("src/sub/a.py", "src/**/*.py", True),
        ("src/a.py", "src/**/*.py", True),
        ("proto/x_pb2.py", "*_pb2.py", True),
        ("build.gradle", "build/", False),
        ("a/build/out.o", "build/", True),
        ("yarn.lock", "*.lock", True),
        ("file[1].txt", "file[0-9].txt", False),
        ("file1.txt", "file[0-9].txt", True),
    ],
)
def test_gitignore_style_globs(path, pattern, expected):
    assert path_matches(path, pattern) is expected


def test_default_ignores_and_config_ignores_report_their_origin():
    cfg = RepoConfig(ignore_paths=("docs/**",))
    assert cfg.ignored_by("node_modules/x/index.js") == ("node_modules/", "default")
    assert cfg.ignored_by("api/service_pb2.py") == ("*_pb2.py", "default")
    assert cfg.ignored_by("package-lock.json") == ("package-lock.json", "default")
    assert cfg.ignored_by("docs/guide.md") == ("docs/**", "config")
    assert cfg.ignored_by("src/app.py") is None
    assert RepoConfig(default_ignores=False).ignored_by("vendor/x.go") is None
    assert {"vendor/", "node_modules/", "third_party/", "*.min.js", "*.lock", "*_pb2.py", "dist/", "build/"} <= set(
        DEFAULT_IGNORES
    )


def test_find_repo_config(tmp_path: Path):
    assert find_repo_config(tmp_path) == RepoConfig()
    (tmp_path / ".revbot.yml").write_text("max_comments: 2\n")
    cfg = find_repo_config(tmp_path)
    assert cfg.max_comments == 2 and cfg.source == str(tmp_path / ".revbot.yml")
    with pytest.raises(UsageError, match="cannot read config file"):
        load_repo_config(tmp_path / "missing.yml")
    (tmp_path / ".revbot.yml").write_text("max_comments: 2\nmax_comment: 3\n")
    with pytest.raises(DataError) as err:
        find_repo_config(tmp_path)
    assert str(err.value).startswith(f"{tmp_path / '.revbot.yml'}:2: unknown key 'max_comment'")


# --------------------------------------------------------------------------- hostile .revbot.yml
# The service reads .revbot.yml from a PR's base branch: anyone who can push a branch writes it.


def alias_bomb(levels: int = 9) -> str:
    """A "billion laughs" in ~300 bytes: each level lists the previous one nine times."""
    lines = ['a0: &a0 ["x","x","x","x","x","x","x","x","x"]']
    lines += [f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, levels)]
    lines.append("ignore_paths: [" + ",".join([f"*a{levels - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n"


def refused(text, source="acme/widgets:.revbot.yml@0123abcd") -> str:
    started = time.perf_counter()
    with pytest.raises(DataError) as info:
        RepoConfig.from_yaml(text, source=source)
    # an unguarded parser takes minutes to hours on these inputs; 5 s leaves room for a loaded CI machine
    assert time.perf_counter() - started < 5.0
    message = str(info.value)
    assert message.startswith(source + ":") and "\n" not in message
    assert len(message) <= len(source) + 10 + 300
    return message


def test_a_yaml_alias_bomb_is_refused_fast_with_a_short_message():
    bomb = alias_bomb()
    assert len(bomb) < 700
    assert "anchors and aliases" in refused(bomb)
    assert "anchors and aliases" in refused("ignore_paths: &x ['docs/']\n")  # an anchor alone, too
    assert "anchors and aliases" in refused("max_comments: *nothing\n")  # an undefined alias as well


@pytest.mark.parametrize(
    "text", ["[" * 10_000, "a: " + "{b: " * 10_000, "- " * 10_000 + "x\n", "ignore_paths: [[[[['deep']]]]]\n"]
)
def test_deep_nesting_is_a_clear_error_not_a_recursion_error(text):
    assert "nested more than 4 levels deep" in refused(text)


def test_the_size_cap_is_checked_before_parsing():
    ok = "max_comments: 4\n# " + "x" * (63 * 1024) + "\n"
    assert RepoConfig.from_yaml(ok).max_comments == 4
    message = refused("max_comments: 4\n# " + "x" * (64 * 1024) + "\n")
    assert "may be at most 65536 bytes" in message
    assert "at most 65536 bytes" in refused(b"\xff" * 70_000)


@pytest.mark.parametrize(
    "text, words",
    [
        ("enabled: 2001-02-30\n", "invalid value for 'enabled': day is out of range"),
        ("max_comments: " + "9" * 5000 + "\n", "invalid value for 'max_comments': Exceeds the limit"),
        ("max_comments: 0b" + "1" * 60_000 + "\n", "got a 60000-bit number"),
        ("model_version: 0b" + "1" * 60_000 + "\n", "'model_version' must be a model version"),
        ("max_comments: 5000\n", "at most 1000"),
        ("max_comments: '" + "x" * 60_000 + "'\n", "must be a whole number"),
        ("ignore_paths: [" + ",".join(["[1]"] * 5000) + "]\n", "must be a list of path globs"),
        ("ignore_paths: [" + ",".join(["a"] * 201) + "]\n", "has 201 entries; at most 200"),
        ("ignore_paths: ['" + "a" * 400 + "']\n", "longer than 300 characters"),
        ("'" + "k" * 1000 + "': 1\n", "unknown key 'kkkk"),
        ("enabled: !!binary 'zz'\n", "invalid value for 'enabled'"),
        ("a: 1\n---\nb: 2\n", "invalid YAML"),
    ],
)
def test_every_parser_failure_is_a_short_data_error(text, words):
    assert words in refused(text)


def test_glob_matching_cannot_be_made_to_backtrack_for_hours():
    """``*a*a*...*b`` against a long name: exponential with a backtracking whole-path regex."""
    started = time.perf_counter()
    assert not path_matches("a" * 250, "*a" * 20 + "*b")
    assert not path_matches("/".join(["a"] * 60), "**/" * 30 + "b")
    assert path_matches("src/" + "a" * 250 + "b.py", "src/" + "*a" * 20 + "*b.py")
    assert time.perf_counter() - started < 5.0  # hours when it backtracks; room for a loaded machine
    assert path_matches("a/x/b", "a**b") is False  # gitignore: ** inside a name is a plain *


def test_one_glob_walk_matches_the_whole_path_or_a_directory_it_lies_in_as_asked():
    # the walk .revbot.yml's ignore_paths (whole path or a directory above) and .gitattributes (whole path) share
    names = "src/gen/api.py".split("/")
    assert components_match(glob_components("src/**/*.py"), names)
    assert not components_match(glob_components("src/gen"), names)  # a directory: not the whole path
    assert components_match(glob_components("src/gen"), names, whole=False, inside=True)
    assert not components_match(glob_components("src/gen/api.py"), names, whole=False, inside=True)
    assert components_match(glob_components("gen/*.py"), names, 1)  # from the second component on
    assert not components_match(glob_components("src/**"), ["src"])  # a trailing ** needs something inside
