"""The one settings model (adapters.settings): every environment variable, one error style,
one name per variable (the old names of 0.1.0's development are not read), and what reads the
environment through it."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from adapters.settings import ENV_VARS, Settings
from bot.errors import UsageError
from webhooks.settings import ServiceConfig

PEM = "-----BEGIN PRIVATE KEY-----\nMIIEvQ-not-a-real-key\n-----END PRIVATE KEY-----\n"


def test_defaults_paths_in_home_and_secrets_stay_out_of_repr(tmp_path: Path) -> None:
    env = {
        "REVBOT_HOME": str(tmp_path),
        "REVBOT_DB": "data/store.db",
        "REVBOT_MODELS_DIR": "/abs/models",
        "REVBOT_QUEUE": "jobs.db",
        "REVBOT_BACKEND": " OpenAI ",
        "REVBOT_OPENAI_API_KEY": "sk-verysecretvalue1234567890",
        "REVBOT_WEBHOOK_SECRET": "hush-hush-secret",
        "GITHUB_TOKEN": "ghp_" + "a" * 36,
        "REVBOT_TOKEN_BUDGET": "1000",
        "REVBOT_BOT_LOGINS": "revbot[bot], , other ",
        "REVBOT_GITHUB_API_URL": "https://ghe.example/api/v3/",
        "REVBOT_LOG_LEVEL": "info",
    }
    s = Settings.from_env(env)
    assert s.db == tmp_path / "data/store.db" and s.models_dir == Path("/abs/models")
    assert s.queue == str(tmp_path / "jobs.db") and s.embedded_cache == tmp_path / "cache"
    assert s.backend == "openai" and s.token_budget == 1000 and s.log_level == "INFO"
    assert s.bot_logins == ("revbot[bot]", "other") and s.github_api_url == "https://ghe.example/api/v3"
    assert s.secret("openai_api_key") == "sk-verysecretvalue1234567890"
    assert s.secret("github_token") == "ghp_" + "a" * 36  # GITHUB_TOKEN: the fallback name, no warning
    text = repr(s) + str(s.model_dump())
    assert "verysecret" not in text and "hush" not in text and "ghp_" not in text

    empty = Settings.from_env({"REVBOT_MODEL": "   ", "REVBOT_BATCH_SIZE": ""})  # empty counts as unset
    assert empty.queue == "revbot-queue.db" and empty.db == Path("revbot.db") and empty.backend == "local"
    assert empty.model is None and empty.batch_size == 8 and empty.github_api_url == "https://api.github.com"
    assert {"REVBOT_DB", "REVBOT_QUEUE", "REVBOT_GITHUB_APP_PRIVATE_KEY_FILE", "GITHUB_TOKEN"} <= set(ENV_VARS)
    old = {"GITHUB_APP_ID", "GITHUB_APP_PRIVATE_KEY_PATH", "GITHUB_APP_INSTALLATION_ID", "REVBOT_GITHUB_PRIVATE_KEY"}
    assert not (old | {"REVBOT_BOT_LOGIN"}) & set(ENV_VARS)  # one name per variable


def test_the_environment_is_read_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REVBOT_BATCH_SIZE", "3")
    assert Settings.from_env().batch_size == 3
    monkeypatch.setenv("REVBOT_BATCH_SIZE", "5")
    assert Settings.from_env().batch_size == 5
    assert Settings.from_env({}).batch_size == 8  # a mapping replaces os.environ entirely


@pytest.mark.parametrize(
    "env, message",
    [
        (
            {"REVBOT_BATCH_SIZE": "eight"},
            "REVBOT_BATCH_SIZE is not a whole number (got 'eight'); expected a whole number greater than 0",
        ),
        ({"REVBOT_TOKEN_BUDGET": "0"}, "REVBOT_TOKEN_BUDGET is not greater than 0 (got '0'); expected a whole number"),
        (
            {"REVBOT_BACKEND": "cloud"},
            "REVBOT_BACKEND is not one of the choices (got 'cloud'); expected one of local, openai",
        ),
        ({"REVBOT_QUEUE": "amqp://127.0.0.1"}, "REVBOT_QUEUE is a URL of an unknown kind (got 'amqp://127.0.0.1')"),
        ({"REVBOT_LOG_LEVEL": "loud"}, "REVBOT_LOG_LEVEL is not one of the choices (got 'LOUD'); expected DEBUG"),
        (
            {"REVBOT_WORKER_LEASE": "nan"},
            "REVBOT_WORKER_LEASE is not a number (got 'nan'); expected a number of seconds",
        ),
        ({"REVBOT_WEB_WORKERS": "-2"}, "REVBOT_WEB_WORKERS is not greater than 0 (got '-2')"),
        ({"REVBOT_GITHUB_API_URL": "ghe.example"}, "REVBOT_GITHUB_API_URL does not start with http:// or https://"),
        (
            {"REVBOT_GITHUB_APP_INSTALLATION_ID": "abc"},
            "REVBOT_GITHUB_APP_INSTALLATION_ID is not a whole number (got 'abc')",
        ),
    ],
)
def test_a_bad_value_names_the_variable_the_problem_and_the_form(env: dict[str, str], message: str) -> None:
    with pytest.raises(UsageError) as caught:
        Settings.from_env(env)
    assert str(caught.value).startswith(message)
    assert caught.value.__cause__ is not None  # the ValidationError is kept as the cause


def test_a_bad_secret_is_named_but_never_shown() -> None:
    with pytest.raises(UsageError) as caught:
        Settings.from_env({"REVBOT_GITHUB_APP_PRIVATE_KEY": "/etc/revbot/app-secret-path.pem"})
    text = str(caught.value)
    assert text.startswith("REVBOT_GITHUB_APP_PRIVATE_KEY is not PEM text (value not shown)")
    assert "REVBOT_GITHUB_APP_PRIVATE_KEY_FILE" in text  # where a path belongs
    assert "app-secret-path" not in text and "app-secret-path" not in str(caught.value.__cause__)


def test_every_bad_variable_is_reported_at_once() -> None:
    with pytest.raises(UsageError) as caught:
        Settings.from_env({"REVBOT_BATCH_SIZE": "x", "REVBOT_JOB_ATTEMPTS": "0"})
    assert "REVBOT_BATCH_SIZE" in str(caught.value) and "REVBOT_JOB_ATTEMPTS" in str(caught.value)


def test_old_names_are_not_read_and_revbots_name_wins_over_a_fallback(caplog: pytest.LogCaptureFixture) -> None:
    old = {"GITHUB_APP_ID": "42", "GITHUB_APP_PRIVATE_KEY_PATH": "~/app.pem", "GITHUB_APP_INSTALLATION_ID": "77"}
    old |= {"REVBOT_GITHUB_PRIVATE_KEY": "/keys/app.pem", "REVBOT_BOT_LOGIN": "old[bot]"}
    with caplog.at_level(logging.WARNING, logger="adapters.settings"):
        s = Settings.from_env(old)
    assert (s.github_app_id, s.github_app_private_key_file, s.github_app_installation_id) == (None, None, None)
    assert s.bot_logins == () and not caplog.records
    s = Settings.from_env({"REVBOT_GITHUB_TOKEN": "t-new", "GITHUB_TOKEN": "t-fallback"})
    assert s.secret("github_token") == "t-new"
    assert Settings.from_env({"GITHUB_TOKEN": "t-fallback"}).secret("github_token") == "t-fallback"


def test_the_service_config_is_built_from_the_model(tmp_path: Path) -> None:
    cfg = ServiceConfig.from_env(
        {
            "REVBOT_HOME": str(tmp_path),
            "REVBOT_WEBHOOK_SECRET": "s3cret",
            "REVBOT_GITHUB_APP_ID": "42",
            "REVBOT_GITHUB_APP_PRIVATE_KEY": PEM,
            "REVBOT_WORKER_LEASE": "12.5",
            "REVBOT_JOB_RETENTION_DAYS": "2",
            "REVBOT_METRICS_TOKEN": "m-token",
            "REVBOT_BOT_LOGINS": "a[bot],b",
        },
        workers=3,
    )
    s = cfg.settings
    assert cfg.secret == "s3cret" and s.github_app_id == "42" and s.secret("github_app_private_key") == PEM.strip()
    assert s.github_app_private_key_file is None and s.db == tmp_path / "revbot.db" and cfg.workers == 3
    assert s.worker_lease == 12.5 and cfg.retention_s == 2 * 86400.0 and s.secret("metrics_token") == "m-token"
    assert s.bot_logins == ("a[bot]", "b") and cfg.has_github_credentials
    assert "s3cret" not in repr(cfg) and "BEGIN" not in repr(cfg) and "m-token" not in repr(cfg)
    # command-line overrides are checked as the variable would be, and read nothing else
    changed = cfg.with_overrides({"worker_lease": "3", "workers": 0, "queue": "redis://127.0.0.1:6379/3"})
    assert changed.settings.worker_lease == 3.0 and changed.workers == 0 and changed.secret == "s3cret"
    with pytest.raises(UsageError, match="REVBOT_WEB_THREADS"):
        cfg.with_overrides({"web_threads": 0})
    with pytest.raises(UsageError, match="unknown service setting"):
        cfg.with_overrides({"lease_s": 3})
    with pytest.raises(UsageError, match=r"^REVBOT_WEBHOOK_MAX_BODY is not a whole number \(got '10MB'\)"):
        ServiceConfig.from_env({"REVBOT_WEBHOOK_MAX_BODY": "10MB"})


def test_paths_read_elsewhere_follow_the_model(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from adapters.embedded import cache_root
    from adapters.store import default_db_path
    from adapters.versions import default_models_dir

    for name in ("REVBOT_DB", "REVBOT_MODELS_DIR", "REVBOT_CACHE_DIR", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("REVBOT_HOME", str(tmp_path))
    monkeypatch.setenv("REVBOT_DB", "sub/store.db")
    assert default_db_path() == tmp_path / "sub/store.db"  # relative to the home, like the service's
    assert default_models_dir() == tmp_path / "models" and cache_root() == tmp_path / "cache"
    monkeypatch.delenv("REVBOT_HOME")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_db_path() == Path("sub/store.db") and cache_root() == tmp_path / "xdg" / "revbot"


def test_a_helper_reading_one_value_is_not_stopped_by_an_unrelated_bad_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A command reports a bad variable when it reads its settings; a library helper that needs one
    path (the store, the models folder, the cache, the metrics folder) checks only what it reads."""
    from adapters.embedded import cache_root
    from adapters.store import default_db_path
    from adapters.versions import default_models_dir
    from webhooks.metrics import multiprocess_dir

    monkeypatch.setenv("REVBOT_HOME", str(tmp_path))
    monkeypatch.delenv("REVBOT_DB", raising=False)
    monkeypatch.delenv("REVBOT_MODELS_DIR", raising=False)
    monkeypatch.delenv("REVBOT_CACHE_DIR", raising=False)
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    monkeypatch.setenv("REVBOT_WEB_WORKERS", "many")
    with pytest.raises(UsageError, match="REVBOT_WEB_WORKERS is not a whole number"):
        Settings.from_env()
    assert default_db_path() == tmp_path / "revbot.db" and default_models_dir() == tmp_path / "models"
    assert cache_root() == tmp_path / "cache" and multiprocess_dir() is None
    monkeypatch.setenv("REVBOT_HOME", "")  # empty counts as unset
    monkeypatch.setenv("REVBOT_DB", "")
    assert default_db_path() == Path("revbot.db")


# --------------------------------------------------------------------------- the CLI reads through the model


def test_the_log_level_variable_is_read_through_the_model() -> None:
    from adapters.cli_options import log_level

    assert (
        log_level(0, {}) == logging.WARNING and log_level(1, {}) == logging.INFO and log_level(2, {}) == logging.DEBUG
    )
    assert log_level(0, {"REVBOT_LOG_LEVEL": " debug "}) == logging.DEBUG  # the variable wins over the flags
    assert log_level(2, {"REVBOT_LOG_LEVEL": "error"}) == logging.ERROR
    assert log_level(0, {"REVBOT_LOG_LEVEL": "", "REVBOT_BATCH_SIZE": "x"}) == logging.WARNING  # only its variable
    for bad in ("loud", "basic_format", "warn"):  # logging's other names are not levels here
        with pytest.raises(UsageError, match=r"^REVBOT_LOG_LEVEL is not one of the choices \(got '"):
            log_level(0, {"REVBOT_LOG_LEVEL": bad})


def test_a_bad_log_level_is_one_warning_naming_it_and_help_still_shows(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from revbot.cli import main

    monkeypatch.setenv("REVBOT_LOG_LEVEL", "loud")
    root = logging.getLogger()
    level = root.level
    try:
        main(["-v", "review", "--help"])  # returns: help is no error
        assert root.level == logging.INFO  # -v decides
    finally:
        root.setLevel(level)
    out, err = capsys.readouterr()
    assert "Usage: revbot review" in out
    warning = "revbot: warning: REVBOT_LOG_LEVEL is not one of the choices (got 'LOUD'); expected DEBUG"
    assert err.count(warning) == 1 and "logging at INFO instead" in err


def test_retrain_store_and_models_default_to_the_model_paths(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A relative REVBOT_DB or REVBOT_MODELS_DIR lives in REVBOT_HOME for `revbot retrain` as for
    every other reader, not in the current directory."""
    from adapters.versions import ModelRegistry
    from revbot.cli import main

    seen: dict[str, Path] = {}

    def fake_retrain(*, store, models_dir, **_):
        seen.update(db=store.path, models=ModelRegistry(models_dir).root)
        raise UsageError("stopped by the test")

    monkeypatch.setattr("revbot.retrain.retrain", fake_retrain)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("REVBOT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("REVBOT_DB", "data/r.db")
    monkeypatch.setenv("REVBOT_MODELS_DIR", "m")
    with pytest.raises(SystemExit):
        main(["retrain", "--no-harvest"])
    assert "stopped by the test" in capsys.readouterr().err
    assert seen == {"db": tmp_path / "home" / "data" / "r.db", "models": tmp_path / "home" / "m"}
