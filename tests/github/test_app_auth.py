"""GitHub App auth end to end: an RSA key made here, an RS256 JWT checked by the simulator against
the App's public key, an installation token that is cached and refreshed before it expires."""

from __future__ import annotations

import time

import jwt
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from ghsim_data import REPO, make_seed

from adapters.github import GitHubClient
from adapters.settings import Settings
from bot.errors import GitHubError, UsageError
from revbot.dev.github_sim import GitHubSimulator

APP_ID = 4242
INSTALLATION = 77
TOKEN_ROUTE = "POST /app/installations/{installation_id}/access_tokens"


def _pem(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


@pytest.fixture(scope="module")
def keys() -> dict:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return {"private": _pem(key), "public": public, "other": _pem(other)}


@pytest.fixture
def app_sim(keys):
    seed = make_seed(
        apps=[
            {
                "id": APP_ID,
                "slug": "revbot",
                "installations": [INSTALLATION, 78],
                "public_key": keys["public"],
                "token_ttl": 3600,
            }
        ]
    )
    with GitHubSimulator(seed) as simulator:
        yield simulator


def test_jwt_buys_an_installation_token_that_is_cached(app_sim, keys, tmp_path):
    key_file = tmp_path / "app.pem"
    key_file.write_text(keys["private"])
    with GitHubClient(
        api_url=app_sim.url,
        app_id=APP_ID,
        private_key_path=key_file,
        installation_id=INSTALLATION,
        min_write_interval=0,
    ) as gh:
        assert gh.get_repo(REPO)["name"] == "widgets"
        assert gh.get_pull(REPO, 1)["number"] == 1
        made = gh.create_issue_comment(REPO, 1, "from the app")
        assert made["user"]["login"] == "revbot[bot]" and made["user"]["type"] == "Bot"
        assert app_sim.stats()["by_route"][TOKEN_ROUTE] == 1 and app_sim.stats()["tokens_issued"] == 1
        assert gh.request_count == 4  # one token request + three API calls
        assert keys["private"] not in repr(gh) and "app 4242 installation 77" in repr(gh)


def test_token_is_refreshed_five_minutes_before_it_expires(app_sim, keys):
    now = [time.time()]
    with GitHubClient(
        api_url=app_sim.url,
        app_id=APP_ID,
        private_key=keys["private"],
        installation_id=INSTALLATION,
        clock=lambda: now[0],
    ) as gh:
        gh.get_repo(REPO)
        now[0] += 3600 - 310  # still more than 5 minutes left: reuse
        gh.get_repo(REPO)
        assert app_sim.stats()["tokens_issued"] == 1
        now[0] += 20  # inside the 5-minute margin: a fresh token
        gh.get_repo(REPO)
        assert app_sim.stats()["tokens_issued"] == 2


def test_app_settings_from_the_environment_and_other_installations(app_sim, keys, tmp_path):
    key_file = tmp_path / "k.pem"
    key_file.write_text(keys["private"])
    env = {
        "REVBOT_GITHUB_APP_ID": str(APP_ID),
        "REVBOT_GITHUB_APP_PRIVATE_KEY_FILE": str(key_file),
        "REVBOT_GITHUB_APP_INSTALLATION_ID": str(INSTALLATION),
        "REVBOT_GITHUB_API_URL": app_sim.url,
    }
    with GitHubClient.from_settings(Settings.from_env(env)) as gh:
        assert gh.get_repo(REPO)["name"] == "widgets"
        before = gh.request_count
        other = gh.with_installation(78)
        assert other.get_repo(REPO)["name"] == "widgets" and "installation 78" in repr(other)
        assert other.request_count == 2 and gh.request_count == before  # token + GET, counted apart
    assert app_sim.stats()["tokens_issued"] == 2


def test_the_key_itself_in_the_environment(app_sim, keys):
    env = {
        "REVBOT_GITHUB_APP_ID": str(APP_ID),
        "REVBOT_GITHUB_APP_PRIVATE_KEY": keys["private"],
        "REVBOT_GITHUB_APP_INSTALLATION_ID": str(INSTALLATION),
        "GITHUB_API_URL": app_sim.url,
    }
    with GitHubClient.from_settings(Settings.from_env(env)) as gh:
        assert gh.get_repo(REPO)["name"] == "widgets" and f"installation {INSTALLATION}" in repr(gh)


def test_wrong_key_or_installation_gives_clear_errors(app_sim, keys):
    with GitHubClient(
        api_url=app_sim.url, app_id=APP_ID, private_key=keys["other"], installation_id=INSTALLATION
    ) as gh:
        with pytest.raises(GitHubError) as caught:
            gh.get_repo(REPO)
    assert caught.value.status == 401 and "GitHub App 4242" in str(caught.value)
    assert "PRIVATE KEY" not in str(caught.value)
    with GitHubClient(api_url=app_sim.url, app_id=APP_ID, private_key=keys["private"], installation_id=5) as gh:
        with pytest.raises(GitHubError, match="installation 5 of GitHub App 4242 not found"):
            gh.get_repo(REPO)


def test_key_problems_are_reported_without_the_key(tmp_path, keys):
    with pytest.raises(UsageError, match="cannot read the GitHub App private key .*missing.pem"):
        GitHubClient(
            api_url="http://127.0.0.1:9", app_id=1, private_key_path=tmp_path / "missing.pem", installation_id=1
        )
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN RSA PRIVATE KEY-----\nnot really\n-----END RSA PRIVATE KEY-----\n")
    with pytest.raises(UsageError, match="garbage.pem is not an unencrypted PEM private key") as caught:
        GitHubClient(api_url="http://127.0.0.1:9", app_id=1, private_key_path=garbage, installation_id=1)
    assert "not really" not in str(caught.value)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__  # the parser's error stays out
    with pytest.raises(UsageError, match="installation id"):
        GitHubClient(api_url="http://127.0.0.1:9", app_id=1, private_key=keys["private"])


def test_simulator_checks_the_jwt(app_sim, keys):
    url = f"{app_sim.url}/app/installations/{INSTALLATION}/access_tokens"
    now = int(time.time())

    def post(token: str) -> requests.Response:
        return requests.post(url, headers={"Authorization": f"Bearer {token}"}, json={})

    good = jwt.encode({"iat": now - 60, "exp": now + 300, "iss": str(APP_ID)}, keys["private"], algorithm="RS256")
    answer = post(good)
    assert answer.status_code == 201 and answer.json()["token"].startswith("ghs_") and "expires_at" in answer.json()
    assert (
        post(
            jwt.encode({"iat": now - 60, "exp": now + 300, "iss": str(APP_ID)}, "k" * 32, algorithm="HS256")
        ).status_code
        == 401
    )
    assert (
        post(
            jwt.encode({"iat": now - 900, "exp": now - 300, "iss": str(APP_ID)}, keys["private"], algorithm="RS256")
        ).status_code
        == 401
    )
    assert (
        post(
            jwt.encode({"iat": now - 60, "exp": now + 300, "iss": "999"}, keys["private"], algorithm="RS256")
        ).status_code
        == 401
    )
    assert (
        post(
            jwt.encode({"iat": now - 60, "exp": now + 300, "iss": str(APP_ID)}, keys["other"], algorithm="RS256")
        ).status_code
        == 401
    )
    assert post("not-a-jwt").status_code == 401
    # the JWT itself is not an API token, and the issued token works for the API
    assert requests.get(f"{app_sim.url}/repos/{REPO}", headers={"Authorization": f"Bearer {good}"}).status_code == 401
    issued = answer.json()["token"]
    assert requests.get(f"{app_sim.url}/repos/{REPO}", headers={"Authorization": f"token {issued}"}).status_code == 200
    assert requests.get(f"{app_sim.url}/app", headers={"Authorization": f"Bearer {good}"}).json()["slug"] == "revbot"
