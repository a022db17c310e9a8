"""The HTTP API against a real `fedshare serve` (uvicorn) on a free loopback port, over HTTP:
tokens, bad bodies, receipts that go from accepted to applied, recommendations of the served
model, a kill -9 between accepting and applying, and concurrent requests for one user."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager

import pandas as pd
import pytest
from conftest import REPO, served_state

from fedshare.service.api import MAX_ITEMS
from fedshare.service.tokens import TokenStore

httpx = pytest.importorskip("httpx")
# Generous timeouts: on a loaded 2-core CI machine a request that reloads the switched model takes seconds.
http = httpx.Client(timeout=30)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A tiny trained model served from a state folder (no MLflow), and its overrides."""
    return served_state(tmp_path_factory.mktemp("api"), ())


@pytest.fixture
def state(served, tmp_path):
    """A copy of the served state folder, an empty inbox, and tokens for two sharing users and the operator."""
    source, overrides = served
    copy = tmp_path / "state"
    shutil.copytree(source, copy)
    (tmp_path / "inbox").mkdir()
    mask = pd.read_parquet(copy / "models" / "0000" / "masks.parquet")
    sharing = sorted(mask.loc[mask["shared"], "user_id"].astype(str).unique())
    tokens = TokenStore(copy)
    users = {user: tokens.issue(user) for user in sharing[:2]}
    return copy, tmp_path / "inbox", overrides, users, tokens.issue(None), mask


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def api(state_dir, inbox, overrides, apply_every=0.0, log=None):
    """`fedshare serve` in its own process group; waits for /health; stopped (or found killed) at the end."""
    port = free_port()
    command = [sys.executable, "-m", "fedshare.cli", "serve", "--state", str(state_dir), "--inbox", str(inbox)]
    command += ["--port", str(port), "--apply-every", str(apply_every)] + [a for o in overrides for a in ("--set", o)]
    out = open(log or os.devnull, "ab")
    process = subprocess.Popen(command, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if http.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None, f"fedshare serve exited with {process.returncode}"
            assert time.monotonic() < deadline, "fedshare serve did not answer /health in 90 s"
            time.sleep(0.3)
        yield url, process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        out.close()


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


def wait_for(url, token, receipt, state="applied", seconds=120):
    deadline = time.monotonic() + seconds
    while True:
        status = http.get(f"{url}/requests/{receipt}", headers=bearer(token), timeout=10).json()
        if status["state"] == state or time.monotonic() > deadline:
            return status
        time.sleep(0.5)


def test_tokens_decide_who_may_read_and_change_what(state):
    state_dir, inbox, overrides, users, operator, _ = state
    (alice, alice_token), (bob, _) = users.items()
    with api(state_dir, inbox, overrides) as (url, _):
        assert http.get(f"{url}/health").status_code == 200  # no token needed
        assert "/users/{user_id}/consent" in http.get(f"{url}/openapi.json").json()["paths"]
        assert http.get(f"{url}/docs").status_code == 200
        assert http.get(f"{url}/users/{alice}/consent").status_code == 401
        assert http.get(f"{url}/users/{alice}/consent", headers=bearer("forged")).status_code == 401
        assert http.get(f"{url}/users/{alice}/consent", headers=bearer(alice_token)).status_code == 200
        assert http.get(f"{url}/users/{bob}/consent", headers=bearer(alice_token)).status_code == 403
        assert http.post(f"{url}/users/{bob}/unshare", headers=bearer(alice_token)).status_code == 403
        assert http.get(f"{url}/users/{bob}/recommendations", headers=bearer(alice_token)).status_code == 403
        assert http.get(f"{url}/users/{bob}/consent", headers=bearer(operator)).status_code == 200
        # a new token for alice revokes her old one
        TokenStore(state_dir).issue(alice)
        assert http.get(f"{url}/users/{alice}/consent", headers=bearer(alice_token)).status_code == 401
    assert not list(inbox.iterdir())  # the refused unshare wrote nothing


def test_bad_bodies_are_422_with_a_reason_and_change_nothing(state):
    state_dir, inbox, overrides, users, _, mask = state
    alice, token = next(iter(users.items()))
    not_hers = mask.loc[mask["user_id"].astype(str) != alice, "item_id"].astype(str)
    unknown = sorted(set(not_hers) - set(mask.loc[mask["user_id"].astype(str) == alice, "item_id"].astype(str)))[0]
    with api(state_dir, inbox, overrides) as (url, _):
        consent = f"{url}/users/{alice}/consent"
        for body in (
            {"ratio": 1.5},
            {"ratio": -0.1},
            {"ratio": "half"},
            {"ratio": 0.5, "items": []},
            {},
            {"items": [unknown]},
            {"items": [str(i) for i in range(MAX_ITEMS + 1)]},
        ):
            answer = http.put(consent, json=body, headers=bearer(token))
            assert answer.status_code == 422, body
            assert answer.json()["detail"], body  # the reason
        unshare = f"{url}/users/{alice}/unshare"
        answer = http.post(unshare, json={"items": [unknown]}, headers=bearer(token))
        assert answer.status_code == 422 and unknown in answer.json()["detail"]
        assert http.post(unshare, json={"items": []}, headers=bearer(token)).status_code == 422
        assert http.post(unshare, json={"items": "all"}, headers=bearer(token)).status_code == 422
        assert http.get(f"{url}/users/{alice}/recommendations?k=0", headers=bearer(token)).status_code == 422
    assert not list(inbox.iterdir()) and not (state_dir / "journal.jsonl").exists()


def test_the_slider_moves_down_and_up_and_the_receipts_go_from_accepted_to_applied(state, tmp_path):
    state_dir, inbox, overrides, users, _, mask = state
    alice, token = next(iter(users.items()))
    theirs = mask[mask["user_id"].astype(str) == alice]
    with api(state_dir, inbox, overrides, apply_every=0.5, log=tmp_path / "serve.log") as (url, _):
        before = http.get(f"{url}/users/{alice}/consent", headers=bearer(token)).json()
        assert before["shared_items"] == int(theirs["shared"].sum()) > 1
        assert before["training_items"] == len(theirs)
        recommended = http.get(f"{url}/users/{alice}/recommendations?k=10", headers=bearer(token)).json()
        on_device = set(theirs["item_id"].astype(str))
        assert len(recommended["items"]) == 10 and not set(recommended["items"]) & on_device

        # unshare one item: 202 with a receipt, then applied by the serve process's own loop
        item = before["shared"][0]
        receipt = http.post(f"{url}/users/{alice}/unshare", json={"items": [item]}, headers=bearer(token))
        assert receipt.status_code == 202 and receipt.json()["state"] == "accepted"
        applied = wait_for(url, token, receipt.json()["request_id"])
        assert applied["state"] == "applied" and applied["model"] != before["model"], applied
        after = http.get(f"{url}/users/{alice}/consent", headers=bearer(token)).json()
        assert after["shared_items"] == before["shared_items"] - 1 and item not in after["shared"]
        assert after["model"] == applied["model"]
        assert [h["state"] for h in after["history"]] == ["accepted", "applied"]

        # the slider to 0: everything still shared is withdrawn
        zero = http.put(f"{url}/users/{alice}/consent", json={"ratio": 0.0}, headers=bearer(token))
        assert zero.status_code == 202 and zero.json()["withdrawn_items"] == after["shared_items"]
        assert wait_for(url, token, zero.json()["request_id"])["state"] == "applied"
        final = http.get(f"{url}/users/{alice}/consent", headers=bearer(token)).json()
        assert final["shared_items"] == 0 and final["ratio"] == 0.0
        same = http.put(f"{url}/users/{alice}/consent", json={"ratio": 0.0}, headers=bearer(token))
        assert same.status_code == 202 and same.json()["state"] == "unchanged" and same.json()["request_id"] is None

        # and up again: the device picks which private items it gives; the server trains on with them
        up = http.put(f"{url}/users/{alice}/consent", json={"ratio": 0.5}, headers=bearer(token))
        half = len(theirs) // 2
        assert up.status_code == 202 and up.json()["shared_items"] == half and up.json()["withdrawn_items"] == 0
        assert wait_for(url, token, up.json()["request_id"])["state"] == "applied"
        raised = http.get(f"{url}/users/{alice}/consent", headers=bearer(token)).json()
        assert raised["shared_items"] == half and raised["model"] != final["model"]

        # exact items, some taken back and some given, under one receipt (two events, withdrawal first)
        give = sorted(set(theirs["item_id"].astype(str)) - set(raised["shared"]))[:1]
        wanted = raised["shared"][1:] + give
        both = http.put(f"{url}/users/{alice}/consent", json={"items": wanted}, headers=bearer(token)).json()
        assert (both["withdrawn_items"], both["shared_items"]) == (1, 1)
        assert wait_for(url, token, both["request_id"])["state"] == "applied"
        now = http.get(f"{url}/users/{alice}/consent", headers=bearer(token)).json()
        assert sorted(now["shared"]) == sorted(wanted)
        later = http.get(f"{url}/users/{alice}/recommendations?k=10", headers=bearer(token)).json()
        assert later["model"] == now["model"] and not set(later["items"]) & on_device
    assert not list(inbox.glob("*.csv"))  # every request file was processed


def test_a_request_accepted_before_a_kill_9_is_applied_after_the_restart_exactly_once(state, tmp_path):
    state_dir, inbox, overrides, users, _, _ = state
    alice, token = next(iter(users.items()))
    with api(state_dir, inbox, overrides, apply_every=0) as (url, process):  # accepts, never applies
        receipt = http.post(f"{url}/users/{alice}/unshare", headers=bearer(token)).json()["request_id"]
        assert wait_for(url, token, receipt, state="accepted", seconds=5)["detail"] == "waiting"
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    assert [p.name for p in inbox.glob("*.csv")] == [f"api-{receipt}.csv"]  # the receipt survived the kill
    with api(state_dir, inbox, overrides, apply_every=0.5, log=tmp_path / "serve.log") as (url, _):
        assert wait_for(url, token, receipt)["state"] == "applied"
        assert http.get(f"{url}/users/{alice}/consent", headers=bearer(token)).json()["shared_items"] == 0
    journal = [json.loads(line) for line in (state_dir / "journal.jsonl").read_text().splitlines()]
    assert [(e["request_id"], e["state"]) for e in journal] == [(receipt, "accepted"), (receipt, "applied")]


def test_concurrent_requests_for_one_user_each_get_a_receipt_and_apply_once(state, tmp_path):
    state_dir, inbox, overrides, users, _, mask = state
    alice, token = next(iter(users.items()))
    shared = sorted(mask.loc[(mask["user_id"].astype(str) == alice) & mask["shared"], "item_id"].astype(str))[:4]
    assert len(shared) == 4
    with api(state_dir, inbox, overrides, apply_every=0.5, log=tmp_path / "serve.log") as (url, _):
        receipts = []

        def unshare(item):
            answer = http.post(f"{url}/users/{alice}/unshare", json={"items": [item]}, headers=bearer(token))
            receipts.append((answer.status_code, answer.json()["request_id"]))

        threads = [threading.Thread(target=unshare, args=(item,)) for item in shared]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(code for code, _ in receipts) == [202] * 4 and len({r for _, r in receipts}) == 4
        for _, receipt in receipts:
            assert wait_for(url, token, receipt)["state"] == "applied"
        after = http.get(f"{url}/users/{alice}/consent", headers=bearer(token)).json()
        assert not set(shared) & set(after["shared"])
    journal = [json.loads(line) for line in (state_dir / "journal.jsonl").read_text().splitlines()]
    for _, receipt in receipts:
        assert [e["state"] for e in journal if e["request_id"] == receipt] == ["accepted", "applied"]


def test_recommendations_carry_the_titles_of_a_data_set_that_has_them(tmp_path):
    """A served ML-1M-layout folder (generated): every recommended raw ID comes with its movies.dat title."""
    from conftest import synthetic_raw

    folder = tmp_path / "data" / "ml-1m"
    folder.mkdir(parents=True)
    raw = synthetic_raw(n_users=30, n_items=40, per_user=10)
    lines = [f"{u}::{i}::{r}::{t}" for u, i, r, t in raw.itertuples(index=False)]
    (folder / "ratings.dat").write_text("\n".join(lines) + "\n")
    (folder / "movies.dat").write_text(
        "".join(f"{i}::Film {i} (199{i % 10})::Drama\n" for i in raw["item_id"].unique())
    )
    (tmp_path / "served").mkdir()
    state, overrides = served_state(tmp_path / "served", ("data.dataset=ml-1m", f"data.data_dir={tmp_path / 'data'}"))
    (tmp_path / "inbox").mkdir()
    user = str(raw["user_id"].iloc[0])
    token = TokenStore(state).issue(user)
    with api(state, tmp_path / "inbox", overrides) as (url, _):
        answer = http.get(f"{url}/users/{user}/recommendations?k=5", headers=bearer(token)).json()
    assert len(answer["items"]) == 5
    assert answer["titles"] == [f"Film {i} (199{int(i) % 10})" for i in answer["items"]]


CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")


@pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason="needs chromium and chromedriver (.ci/run installs them)")
def test_the_slider_page_moves_a_users_share_in_headless_chromium(state, tmp_path):
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    state_dir, inbox, overrides, users, _, mask = state
    alice, token = next(iter(users.items()))
    shared = int(mask.loc[mask["user_id"].astype(str) == alice, "shared"].sum())
    options = webdriver.ChromeOptions()
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1100,900"):
        options.add_argument(argument)
    options.binary_location = CHROMIUM
    with api(state_dir, inbox, overrides, apply_every=0.5, log=tmp_path / "serve.log") as (url, _):
        before = http.get(f"{url}/users/{alice}/recommendations?k=10", headers=bearer(token)).json()["items"]
        browser = webdriver.Chrome(options=options, service=webdriver.ChromeService(CHROMEDRIVER))
        try:
            wait = WebDriverWait(browser, 120, poll_frequency=0.3)

            # read in one script call: the page re-renders the receipts every second (no stale elements)
            def text(element_id):
                return browser.execute_script(f"return document.getElementById('{element_id}').innerText")  # noqa: E731

            browser.get(f"{url}/")
            browser.find_element(By.ID, "user").send_keys(alice)
            browser.find_element(By.ID, "token").send_keys(token)
            browser.find_element(By.ID, "load").click()
            wait.until(lambda _: text("current") == str(shared))
            items = lambda list_id: browser.execute_script(  # noqa: E731
                f"return [...document.querySelectorAll('#{list_id} li')].map((li) => li.innerText)"
            )
            assert items("before") == before

            slider = browser.find_element(By.ID, "slider")  # the user drags it to 0
            browser.execute_script("arguments[0].value = 0; arguments[0].dispatchEvent(new Event('input'))", slider)
            assert text("target") == "0%"
            browser.find_element(By.ID, "apply").click()
            wait.until(lambda _: "applied" in text("requests"))
            wait.until(lambda _: text("current") == "0")
            assert text("error") == ""
            assert len(items("now")) == 10 and items("before") == before  # before stays; now is the new model's
            receipt = browser.execute_script("return document.querySelector('#requests tr').dataset.receipt")
            assert http.get(f"{url}/requests/{receipt}", headers=bearer(token)).json()["state"] == "applied"
            browser.save_screenshot(str(tmp_path / "slider.png"))
        finally:
            browser.quit()
    assert (tmp_path / "slider.png").read_bytes()[:4] == b"\x89PNG"
    if os.environ.get("FEDSHARE_SCREENSHOT"):  # refresh docs/slider_page.png: FEDSHARE_SCREENSHOT=docs/slider_page.png
        shutil.copy(tmp_path / "slider.png", REPO / os.environ["FEDSHARE_SCREENSHOT"])


def test_the_page_is_served_without_a_token_and_calls_the_api_with_one(state):
    state_dir, inbox, overrides, users, _, _ = state
    with api(state_dir, inbox, overrides) as (url, _):
        page = http.get(f"{url}/")
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        assert 'id="slider"' in page.text and "Authorization" in page.text  # the page calls the API with the token
