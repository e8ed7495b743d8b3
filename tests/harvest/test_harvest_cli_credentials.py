"""`revbot harvest github` without credentials, and the API root a harvest records per repository
(what `revbot retrain` harvests from again), against the GitHub simulator."""

from __future__ import annotations

from click.testing import CliRunner
from harvest_kit import REPO, many_comments_seed

from adapters.store import Store
from harvest.mine import harvest_github

CREDENTIAL_VARS = (
    "GITHUB_TOKEN",
    "REVBOT_GITHUB_TOKEN",
    "REVBOT_GITHUB_APP_ID",
    "REVBOT_GITHUB_APP_PRIVATE_KEY_FILE",
    "REVBOT_GITHUB_APP_PRIVATE_KEY",
    "REVBOT_GITHUB_APP_INSTALLATION_ID",
)


def _no_credentials(monkeypatch) -> None:
    for var in CREDENTIAL_VARS:
        monkeypatch.delenv(var, raising=False)


def test_harvest_without_a_token_is_refused_and_names_the_variables(sim_factory, tmp_path, monkeypatch):
    from harvest.cli import harvest

    _no_credentials(monkeypatch)
    sim = sim_factory(many_comments_seed(prs=1, per_pr=2))
    db = tmp_path / "h.db"
    result = CliRunner().invoke(harvest, ["github", REPO, "--db", str(db), "--api-url", sim.url])
    assert result.exit_code == 2, result.output
    assert result.output.startswith("revbot: error: no GitHub credentials")
    for name in (
        "GITHUB_TOKEN",
        "REVBOT_GITHUB_APP_ID",
        "REVBOT_GITHUB_APP_PRIVATE_KEY_FILE",
        "REVBOT_GITHUB_APP_INSTALLATION_ID",
    ):
        assert name in result.output
    assert "--anonymous" in result.output
    assert sim.stats()["total"] == 0 and not db.exists()  # refused before any request or any file


def test_harvest_anonymous_goes_ahead_with_a_warning(sim_factory, tmp_path, monkeypatch):
    from harvest.cli import harvest

    _no_credentials(monkeypatch)
    sim = sim_factory(many_comments_seed(prs=1, per_pr=2))
    db = tmp_path / "h.db"
    result = CliRunner().invoke(harvest, ["github", REPO, "--db", str(db), "--api-url", sim.url, "--anonymous"])
    assert result.exit_code == 0, result.output
    assert f"revbot: warning: harvesting {REPO} anonymously" in result.output and "60 requests an hour" in result.output
    assert Store(db).stats()["comments"] == 2


def test_a_token_needs_no_flag_and_gets_no_warning(sim_factory, tmp_path, monkeypatch):
    from harvest.cli import harvest

    _no_credentials(monkeypatch)
    monkeypatch.setenv("GITHUB_TOKEN", "t")
    sim = sim_factory(many_comments_seed(prs=1, per_pr=1))
    result = CliRunner().invoke(harvest, ["github", REPO, "--db", str(tmp_path / "h.db"), "--api-url", sim.url])
    assert result.exit_code == 0, result.output
    assert "anonymously" not in result.output and "warning" not in result.output


def test_a_harvest_records_the_api_root_it_ran_against(sim_factory, client_for, tmp_path):
    sim = sim_factory(many_comments_seed(prs=1, per_pr=1))
    store = Store(tmp_path / "h.db")
    assert store.api_url(REPO) is None
    harvest_github(client_for(sim), store, REPO)
    assert store.api_url(REPO) == sim.url
    other = sim_factory(many_comments_seed(prs=1, per_pr=1))  # the same repository moved (another host)
    harvest_github(client_for(other), store, REPO)
    assert store.api_url(REPO) == other.url and store.api_url("acme/other") is None


def test_quiet_reaches_the_harvest_and_no_progress_is_gone(sim_factory, tmp_path, monkeypatch):
    from revbot.cli import cli

    _no_credentials(monkeypatch)
    monkeypatch.setenv("GITHUB_TOKEN", "t")
    seen = []

    def fake_harvest(client, store, repo, options):
        from adapters.cli_options import quiet

        seen.append(quiet())
        raise SystemExit(0)

    monkeypatch.setattr("harvest.mine.harvest_github", fake_harvest)
    runner = CliRunner()
    db = str(tmp_path / "h.db")
    for args in (["--quiet"], ["-q"], []):
        result = runner.invoke(cli, ["harvest", "github", REPO, "--db", db, "--api-url", "http://127.0.0.1:9", *args])
        assert result.exit_code == 0, result.output
    assert seen == [True, True, False]
    result = runner.invoke(cli, ["harvest", "github", REPO, "--db", db, "--no-progress"])
    assert result.exit_code == 2 and "No such option '--no-progress'" in result.output


def test_the_options_default_to_the_settings_model(sim_factory, tmp_path, monkeypatch, caplog):
    """--db, --api-url, --token and --bot-login default to what the settings model reads: a relative
    REVBOT_DB in REVBOT_HOME, REVBOT_GITHUB_API_URL and REVBOT_GITHUB_TOKEN before their GITHUB_*
    fallbacks, REVBOT_BOT_LOGINS (the service's variable)."""
    from revbot.cli import cli

    _no_credentials(monkeypatch)
    seed = many_comments_seed(prs=1, per_pr=1)
    seed["tokens"] = [{"token": "t-revbot", "login": "revbot-token"}, {"token": "t-github", "login": "github-token"}]
    sim = sim_factory(seed)
    seen: list[dict] = []

    def fake_harvest(client, store, repo, options):
        seen.append(
            {
                "api": client.api_url,
                "viewer": client.viewer_login(),
                "db": store.path.absolute(),
                "own": set(options.own_logins),
            }
        )
        raise SystemExit(0)

    monkeypatch.setattr("harvest.mine.harvest_github", fake_harvest)
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    monkeypatch.setenv("REVBOT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("REVBOT_DB", "h.db")
    monkeypatch.setenv("REVBOT_GITHUB_API_URL", sim.url)
    monkeypatch.setenv("GITHUB_API_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("REVBOT_GITHUB_TOKEN", "t-revbot")
    monkeypatch.setenv("GITHUB_TOKEN", "t-github")
    monkeypatch.setenv("REVBOT_BOT_LOGINS", "our-app[bot], other")
    runner = CliRunner()
    result = runner.invoke(cli, ["harvest", "github", REPO])
    assert result.exit_code == 0, result.output
    assert seen.pop() == {
        "api": sim.url,
        "viewer": "revbot-token",
        "db": tmp_path / "home" / "h.db",
        "own": {"our-app[bot]", "other"},
    }

    result = runner.invoke(cli, ["harvest", "github", REPO, "--token", "t-github", "--db", "x.db"])
    assert result.exit_code == 0, result.output
    assert seen.pop() == {
        "api": sim.url,
        "viewer": "github-token",  # given on the command line: it wins
        "db": tmp_path / "cwd" / "x.db",  # a path given on the command line is the caller's, as given
        "own": {"our-app[bot]", "other"},
    }

    monkeypatch.delenv("REVBOT_BOT_LOGINS")
    result = runner.invoke(cli, ["harvest", "github", REPO, "--bot-login", "cli-bot"])
    assert result.exit_code == 0 and seen.pop()["own"] == {"cli-bot"}
    result = runner.invoke(cli, ["harvest", "github", REPO])
    assert result.exit_code == 0 and seen.pop()["own"] == {"revbot", "revbot[bot]"}  # the built-in default
