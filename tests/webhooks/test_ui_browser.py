"""The operator pages in a real browser: Debian's headless Chromium driven by Selenium through
chromedriver, against the webhook app served over real HTTP on loopback, on a store, registry and
queue filled like weeks of the demo team's use (``revbot.dev.ui_sample``).

Screenshots of every page go to ``screenshots/ui/`` (gitignored; REVBOT_UI_SCREENSHOTS moves it).
"""

from __future__ import annotations

import http.server
import os
import shutil
import socket
import sqlite3
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from werkzeug.serving import make_server

from adapters.store import Store
from revbot.dev import ui_sample
from tests.needs import NEEDS, lacking
from webhooks.app import create_app
from webhooks.jobs import FAILED, QUEUED
from webhooks.queue import open_queue
from webhooks.ui import data
from webhooks.ui.security import LoginLimiter

TOKEN = "ui-test-token-" + "0123456789abcdef"
CHROMIUM = shutil.which("chromium")
DRIVER = shutil.which("chromedriver")
SHOTS = Path(os.environ.get("REVBOT_UI_SCREENSHOTS") or Path(__file__).resolve().parents[2] / "screenshots" / "ui")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Site:
    """The app on 127.0.0.1 (werkzeug's threaded server), and an attacker's page on ``localhost``
    (another site to the browser) whose form posts to it."""

    def __init__(self, root: Path):
        self.root = root
        self.store = Store(root / "revbot.db")
        self.queue = open_queue(str(root / "queue.db"), root)
        self.registry = ui_sample.fill(self.store, root / "models", self.queue)
        cfg = {
            "webhook_secret": "webhook-secret-not-shown",
            "home": root,
            "db": root / "revbot.db",
            "models_dir": root / "models",
            "queue": str(root / "queue.db"),
            "ui_token": TOKEN,
            "metrics_token": "metrics-token-not-shown",
        }
        self.app = create_app(cfg, queue=self.queue)
        self.server = make_server("127.0.0.1", free_port(), self.app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.evil_dir = root / "evil"
        self.evil_dir.mkdir()
        handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(*a, directory=str(self.evil_dir), **k)  # noqa: E731
        self.evil = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.evil_url = f"http://localhost:{self.evil.server_address[1]}"
        threading.Thread(target=self.evil.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.evil.shutdown()


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    with tempfile.TemporaryDirectory() as tmp:
        s = Site(Path(tmp))
        yield s
        s.close()


@pytest.fixture(scope="module")
def browser(site: Site) -> Iterator[Any]:
    missing = NEEDS["browser"].check()
    if missing:
        lacking("browser", missing)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="revbot-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM or ""
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        "--window-size=1280,1600",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=DRIVER))
    driver.set_page_load_timeout(20)
    SHOTS.mkdir(parents=True, exist_ok=True)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def shot(driver: Any, name: str) -> None:
    driver.save_screenshot(str(SHOTS / f"{name}.png"))


def click(driver: Any, element: Any) -> None:
    """Click and wait for the next page to replace this one (a form post or a link)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    page = driver.find_element(By.TAG_NAME, "html")
    element.click()
    WebDriverWait(driver, 10).until(expected_conditions.staleness_of(page))


def login(driver: Any, site: Site, token: str = TOKEN, name: str = "ann") -> None:
    from selenium.webdriver.common.by import By

    driver.get(site.url + "/ui/")
    assert "/ui/login" in driver.current_url
    driver.find_element(By.ID, "name").send_keys(name)
    driver.find_element(By.ID, "token").send_keys(token)
    click(driver, driver.find_element(By.ID, "login"))


def cells(driver: Any, table_id: str) -> dict[str, dict[str, str]]:
    """group -> data-key -> text, from a numbers table."""
    from selenium.webdriver.common.by import By

    out: dict[str, dict[str, str]] = {}
    for row in driver.find_elements(By.CSS_SELECTOR, f"#{table_id} tr[data-group]"):
        out[row.get_attribute("data-group")] = {
            td.get_attribute("data-key"): td.text for td in row.find_elements(By.CSS_SELECTOR, "td[data-key]")
        }
    return out


def test_a_wrong_token_is_refused_and_the_right_one_opens_the_overview(browser, site):
    from selenium.webdriver.common.by import By

    login(browser, site, token="not-the-token-at-all")
    assert "wrong token" in browser.find_element(By.ID, "login-error").text
    shot(browser, "login")
    login(browser, site)
    assert browser.current_url == site.url + "/ui/"
    assert browser.find_element(By.ID, "current-version").text == site.registry.current_name() == "v2"
    counts = site.queue.store.counts()
    assert browser.find_element(By.ID, f"jobs-{FAILED}").text == str(counts[FAILED]) == "1"
    assert len(browser.find_elements(By.CSS_SELECTOR, "#failed-jobs tr")) == 1 + counts[FAILED]
    assert "acme/shop" in browser.find_element(By.ID, "harvest").text and "4890/5000" in browser.page_source
    shot(browser, "overview")
    cookie = browser.get_cookie("revbot_ui")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/ui"


def test_versions_show_each_versions_own_numbers_and_other_data_apart(browser, site):
    from selenium.webdriver.common.by import By

    browser.get(site.url + "/ui/versions")
    for version in site.registry.list():
        row = browser.find_element(By.ID, f"row-{version.name}").text
        for _, path, digits in data.VERSION_METRICS:
            assert data.fmt_number(data.dig(version.meta, path), digits) in row
    other = browser.find_element(By.CSS_SELECTOR, "tr.other").text
    assert "codereviewer-test.jsonl" in other and "not v1's own numbers" in other and "0.004" in other
    assert "0.004" not in browser.find_element(By.ID, "row-v1").text  # v1's own F1 stays 0.211
    events = browser.find_elements(By.CSS_SELECTOR, "#events tr")
    assert len(events) == 1 + len(site.registry.events())
    assert len(browser.find_elements(By.CSS_SELECTOR, "#timeline circle")) == len(site.registry.events())
    shot(browser, "versions")
    click(browser, browser.find_element(By.LINK_TEXT, "evaluation report"))  # v1's own report
    assert browser.current_url.endswith("/ui/versions/v1/eval/")
    assert "0.211" in browser.find_element(By.CSS_SELECTOR, ".report table").text
    assert '<script>document.title="pwned"</script>' in browser.find_element(By.CSS_SELECTOR, ".report").text
    shot(browser, "report-v1")
    browser.get(site.url + "/ui/versions")
    click(browser, browser.find_element(By.PARTIAL_LINK_TEXT, "report on codereviewer-test.jsonl"))
    assert "not v1's own numbers" in browser.find_element(By.ID, "other-data").text
    shot(browser, "report-v1-other-data")
    assert browser.title != "pwned"


def test_acceptance_numbers_equal_the_stores(browser, site):
    from selenium.webdriver.common.by import By

    browser.get(site.url + "/ui/acceptance")
    shown = cells(browser, "table-version")
    con = sqlite3.connect(site.root / "revbot.db")
    sources = {source: key for key, _, source in data.SERIES}
    expected: dict[str, dict[str, int]] = {}
    for version, source, weight in con.execute("SELECT model_version, source, weight FROM feedback_evidence"):
        per = expected.setdefault(version or "unknown", {})
        per[sources[source]] = per.get(sources[source], 0) + (weight if source.startswith("reaction:") else 1)
    assert set(shown) == set(expected) == {"v1", "v2"}
    for version, counts in expected.items():
        for key, _, _ in data.SERIES:
            assert shown[version][key] == str(counts.get(key, 0)), (version, key)
    # verdicts: a comment's weighted sum, counted independently here
    sums: dict[tuple[str, int], tuple[str, int]] = {}
    for version, cid, polarity, weight in con.execute(
        "SELECT model_version, comment_id, polarity, weight FROM feedback_evidence"
    ):
        old = sums.get((version, cid), (version, 0))[1]
        sums[(version, cid)] = (version, old + polarity * weight)
    for version in expected:
        accepted = sum(1 for (v, _), (_, total) in sums.items() if v == version and total > 0)
        rejected = sum(1 for (v, _), (_, total) in sums.items() if v == version and total < 0)
        assert (shown[version]["accepted"], shown[version]["rejected"]) == (str(accepted), str(rejected))
    weeks = cells(browser, "table-week")
    assert len(weeks) == 3 and sum(int(w["thumbs_up"]) for w in weeks.values()) == sum(
        int(v["thumbs_up"]) for v in shown.values()
    )
    bars = browser.find_elements(By.CSS_SELECTOR, "#chart-version rect[data-value]")
    assert sorted(int(b.get_attribute("data-value")) for b in bars) == sorted(
        int(shown[g][k]) for g in shown for k, _, _ in data.SERIES
    )
    labels = browser.find_element(By.ID, "chart-version").text
    assert "model version" in labels and "count (people or comments)" in labels
    rejected = browser.find_element(By.ID, "rejected-table").text
    assert ui_sample.HOSTILE_BODY in rejected  # shown as text, not run
    assert browser.title != "pwned" and not browser.find_elements(By.CSS_SELECTOR, "main script, main img[src=x]")
    shot(browser, "acceptance")


def test_reviews_list_the_stores_reviews_and_filter_by_repository(browser, site):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    browser.get(site.url + "/ui/reviews")
    rows = browser.find_elements(By.CSS_SELECTOR, "#reviews-table tr.review")
    con = sqlite3.connect(site.root / "revbot.db")
    assert len(rows) == con.execute("SELECT COUNT(*) FROM reviews").fetchone()[0] == 6
    link = rows[0].find_element(By.TAG_NAME, "a").get_attribute("href")
    newest = site.store.recent_reviews(limit=1)[0]
    assert link == f"{site.url.split('/ui')[0]}/{newest.repo}/pull/{newest.pr}" or link.endswith(
        f"/{newest.repo}/pull/{newest.pr}"
    )
    assert ui_sample.HOSTILE_PATH in browser.find_element(By.ID, "reviews-table").text and browser.title != "pwned"
    shot(browser, "reviews")
    Select(browser.find_element(By.ID, "repo-filter")).select_by_value("acme/billing")
    click(browser, browser.find_element(By.ID, "filter"))
    rows = browser.find_elements(By.CSS_SELECTOR, "#reviews-table tr.review")
    billing = con.execute("SELECT COUNT(*) FROM reviews WHERE repo = 'acme/billing'").fetchone()[0]
    assert len(rows) == billing == 3 and all("acme/billing" in r.text for r in rows)


def test_promote_roll_back_and_requeue_through_the_page(browser, site):
    from selenium.webdriver.common.by import By

    browser.get(site.url + "/ui/versions")
    click(browser, browser.find_element(By.ID, "promote-v3"))
    shot(browser, "confirm")
    click(browser, browser.find_element(By.ID, "confirm"))
    assert site.registry.current_name() == "v3", browser.find_element(By.TAG_NAME, "main").text[:300]
    assert "v3 is now the current version" in browser.page_source
    click(browser, browser.find_element(By.ID, "rollback"))
    click(browser, browser.find_element(By.ID, "confirm"))
    assert site.registry.current_name() == "v2"
    last = site.registry.events()[-2:]
    assert [(e["action"], e["version"]) for e in last] == [("promote", "v3"), ("rollback", "v2")]
    assert all(e["by"].startswith("operator page: ann") for e in last)
    [failed] = [j for j in site.queue.store.find() if j.state == FAILED]
    browser.get(site.url + "/ui/")
    click(browser, browser.find_element(By.ID, f"requeue-{failed.id}"))
    click(browser, browser.find_element(By.ID, "confirm"))
    assert site.queue.store.get(failed.id).state == QUEUED
    logged = [(a["action"], a["outcome"], a["actor"].split(" ")[0]) for a in site.store.recent_actions()]
    assert logged[:3] == [("requeue", "done", "ann"), ("rollback", "done", "ann"), ("promote", "done", "ann")]
    assert "ann (127.0.0.1)" in browser.find_element(By.ID, "actions").text


def test_missing_csrf_cross_site_posts_and_guessing_are_refused(browser, site):
    from selenium.webdriver.common.by import By

    before = site.registry.current_name()
    session = requests.Session()
    session.cookies.set("revbot_ui", browser.get_cookie("revbot_ui")["value"], domain="127.0.0.1", path="/ui")
    page = session.get(site.url + "/ui/versions", timeout=10)
    assert page.status_code == 200 and "promote-v1" in page.text  # the stolen cookie works for reading...
    csp = page.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "script-src" not in csp and page.headers["Cache-Control"] == "no-store"
    no_csrf = session.post(site.url + "/ui/actions/promote", data={"target": "v1", "confirm": "yes"}, timeout=10)
    assert no_csrf.status_code == 403 and "CSRF token" in no_csrf.text  # ...but cannot act
    # a page on another site posting the form with a (leaked) valid CSRF token: refused by origin
    browser.get(site.url + "/ui/actions/promote/v1")
    token = browser.find_element(By.NAME, "csrf_token").get_attribute("value")
    (site.evil_dir / "index.html").write_text(
        f'<form id="f" method="post" action="{site.url}/ui/actions/promote">'
        f'<input name="csrf_token" value="{token}"><input name="target" value="v1">'
        '<input name="confirm" value="yes"></form><script>document.getElementById("f").submit()</script>'
    )
    browser.get(site.evil_url + "/index.html")
    refused = browser.find_element(By.ID, "refused").text
    assert "cross-site" in refused
    unconfirmed = session.post(site.url + "/ui/actions/promote", data={"target": "v1", "csrf_token": token}, timeout=10)
    assert unconfirmed.status_code == 400 and "not confirmed" in unconfirmed.text
    assert site.registry.current_name() == before
    refusals = [
        session.post(site.url + "/ui/login", data={"name": "x", "token": "guess"}, timeout=10) for _ in range(2)
    ]
    assert {r.status_code for r in refusals} == {
        403
    }  # no CSRF token from the login form: refused before the token check
    site.app.extensions["revbot_ui"].limiter = LoginLimiter()  # the first test's wrong login forgotten
    guesses = requests.Session()
    form = guesses.get(site.url + "/ui/login", timeout=10).text
    csrf = form.split('name="csrf_token" value="')[1].split('"')[0]
    codes = [
        guesses.post(site.url + "/ui/login", data={"csrf_token": csrf, "name": "x", "token": f"guess{i}"}, timeout=10)
        for i in range(6)
    ]
    assert [r.status_code for r in codes] == [401] * 5 + [429] and int(codes[-1].headers["Retry-After"]) > 0
    assert TOKEN not in page.text and "webhook-secret-not-shown" not in page.text
