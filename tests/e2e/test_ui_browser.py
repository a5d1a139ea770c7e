"""`switchyard demo` from cold, then its runs in the Prefect UI in a real browser (Debian's Chromium,
headless): what a person does after `make demo`.

The demo brings the local stack up itself (`switchyard up`), then under steady traffic releases v1
(blue-green), a good v2 (canary) and a v3 with 20% errors that must be rolled back. A person then
opens the runs page, finds the release that finished, and reads its Markdown summary artifact; and
starts a release from the deployment's run form, which the stack's worker runs to completion.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.client.schemas.sorting import FlowRunSort
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions as conditions
from selenium.webdriver.support.ui import WebDriverWait

from switchyard.checkout import REPO_ROOT
from switchyard.stack.processes import log_tail
from switchyard.stack.state import StackPaths
from tests.e2e.stack_support import SERVICE, Stack, finished_run, new_stack, wait_for

# The first test carries the demo (stack from cold, three builds, three releases) in its setup.
pytestmark = [pytest.mark.e2e, pytest.mark.browser, pytest.mark.timeout(600)]

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
ENV = "production"  # where the demo releases
DEMO_TIMEOUT_S = 600
PAGE_TIMEOUT_S = 30
# The run form: submitted at most this many times (see submit_until_created), within this time.
SUBMIT_ATTEMPTS = 3
SUBMIT_TIMEOUT_S = 150
SERVER_REFUSED = "Something went wrong"

# A finished release run in the runs list: its flow is "release", its state badge says Completed.
RELEASE_RUN_LINK = (
    "//div[contains(@class, 'flow-run-list-item')]"
    "[.//*[contains(@class, 'state-list-item--completed')]]"
    "[.//*[contains(@class, 'flow-run-bread-crumbs__flow-link')]//a[normalize-space() = 'release']]"
    "//a[contains(@class, 'flow-run-bread-crumbs__flow-run-link')]"
)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, dict[str, Any]]]:
    """`switchyard demo --json` on a cold state directory (test fleet, free ports, short windows);
    the stack it brought up and the JSON of its last line. `switchyard down` at the end."""
    stack = new_stack(tmp_path_factory.mktemp("demo-stack"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "SWITCHYARD_"))}
    demo_location = ["--state-dir", str(stack.state_dir), "--fleet", str(stack.fleet_file), "--port", str(stack.port)]
    try:
        result = subprocess.run(
            [sys.executable, "-m", "switchyard.cli", "demo", "--json", *demo_location],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=DEMO_TIMEOUT_S,
        )
        assert result.returncode == 0, f"switchyard demo failed:\n{result.stdout}\n{result.stderr}"
        stack.up_output = result.stdout
        yield stack, json.loads(result.stdout.strip().splitlines()[-1])
    finally:
        stack.down()
        stack.kill_leftovers()


def test_the_demo_releases_v1_then_v2_without_a_failed_request_and_rolls_v3_back(
    demo: tuple[Stack, dict[str, Any]],
) -> None:
    stack, report = demo
    assert report["environment"] == ENV
    services = {s["service"]: s["releases"] for s in report["services"]}
    assert list(services) == [SERVICE, "catalog"]
    releases = {r["name"]: r for r in services[SERVICE]}
    assert [(r["name"], r["strategy"]) for r in services[SERVICE]] == [
        ("v1", "blue-green"),
        ("v2", "canary"),
        ("v3", "canary"),
    ]
    # A fresh stack: nothing serves production before v1, so traffic starts once v1 is live.
    first = releases["v1"]
    assert first["outcome"] == "promoted" and first["requests_sent"] == first["requests_failed"] == 0, json.dumps(first)
    good = releases["v2"]
    assert good["outcome"] == "promoted", json.dumps(good)
    assert good["requests_sent"] > 100 and good["requests_failed"] == 0, json.dumps(good)
    assert good["seconds_from_verdict_to_restored"] is None, json.dumps(good)
    bad = releases["v3"]
    assert bad["outcome"] == "rolled-back", json.dumps(bad)
    assert bad["requests_sent"] > 100, json.dumps(bad)
    assert set(bad["failed_by_version"]) <= {bad["image_version"]}, json.dumps(bad)  # no traffic lost
    # The demo says how soon traffic was back; how soon is a speed, which bench/reliability.py and
    # bench/azure_profile_release.py measure, not a test on a shared machine.
    assert bad["seconds_from_verdict_to_restored"] is not None, json.dumps(bad)
    # Each release lists its stages in order: v2's expand migration ran before its smoke tests.
    stages = [(st["name"], st["outcome"]) for st in good["stages"]]
    assert stages[:2] == [("pre_deploy hook", "passed"), ("smoke", "passed")], stages
    assert stages[-1] == ("release", "promoted") and [o for _, o in stages[2:-1]].count("pass") >= 2, stages
    assert bad["stages"][-1] == {"name": "release", "outcome": "rolled-back", "detail": bad["detail"]}
    assert "fail" in [st["outcome"] for st in bad["stages"]], bad["stages"]
    # The flag flip on the live v2: the answer changed and changed back, and no image moved.
    flip = report["flag_flip"]
    assert flip["answer_when_on"] != flip["answer_before"] == flip["answer_when_off"], flip
    assert flip["image_version"] == good["image_version"], flip
    # The second service, its own app on its own gateway.
    [catalog] = services["catalog"]
    assert catalog["outcome"] == "promoted" and catalog["stages"][-1]["outcome"] == "promoted", catalog
    # The human-readable summary comes first, and says where to look next.
    assert "traffic starts once v1 is live" in stack.up_output
    assert f"releasing {SERVICE} v3" in stack.up_output and stack.state.ui_url in stack.up_output


def newest_completed_release(stack: Stack) -> tuple[str, str, str]:
    """(run name, service, image) of the newest release run that completed, as the stack's API
    records it."""
    with stack.client_settings(), get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=["release"])),
            flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.COMPLETED]))
            ),
            sort=FlowRunSort.EXPECTED_START_TIME_DESC,
            limit=1,
        )
    assert runs, "no completed release run on the stack"
    return runs[0].name, str(runs[0].parameters["service"]), str(runs[0].parameters["image_version"])


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1400,1000",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # for failure messages
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def visible(driver: WebDriver, xpath: str) -> WebElement:
    return WebDriverWait(driver, PAGE_TIMEOUT_S).until(conditions.visibility_of_element_located((By.XPATH, xpath)))


def test_the_ui_shows_the_demos_finished_release_and_its_summary(
    demo: tuple[Stack, dict[str, Any]], browser: WebDriver
) -> None:
    stack, report = demo
    # The demo's last release is the second service's first.
    run_name, service, image = newest_completed_release(stack)
    [catalog] = next(s["releases"] for s in report["services"] if s["service"] == "catalog")
    assert (service, image) == ("catalog", catalog["image_version"])
    browser.get(f"{stack.state.ui_url}/runs")

    # The runs page lists the release run as completed; open it.
    link = visible(browser, RELEASE_RUN_LINK)
    assert link.text == run_name
    link.click()
    WebDriverWait(browser, PAGE_TIMEOUT_S).until(conditions.url_contains("/runs/flow-run/"))
    visible(browser, "//*[contains(@class, 'state-badge')][normalize-space() = 'Completed']")

    # Its Artifacts tab holds the Markdown summary (key release-<service>-<environment>); open it.
    visible(browser, "//li[contains(@class, 'p-tab')][normalize-space() = 'Artifacts']").click()
    key = f"release-{service}-{ENV}"
    card = visible(
        browser,
        f"//a[contains(@href, '/artifacts/artifact/')][.//*[normalize-space() = '{key}']]",
    )
    assert "MARKDOWN" in card.text.upper()
    card.click()

    # The summary is rendered: its heading names the service, the image, the environment and the outcome.
    heading = visible(browser, f"//h1[contains(normalize-space(), 'Release of {service} {image} to {ENV}')]")
    assert heading.text.endswith(f"Release of {service} {image} to {ENV}: PROMOTED")
    assert "Timeline" in browser.find_element(By.TAG_NAME, "body").text


def field(driver: WebDriver, parameter: str) -> WebElement:
    """The input of one parameter in the deployment's run form (found by its label)."""
    return visible(
        driver,
        f"//span[contains(@class, 'schema-form-property__label')][normalize-space() = '{parameter}']"
        "/ancestor::div[contains(concat(' ', @class, ' '), ' schema-form-property ')][1]//textarea",
    )


def fill_in(driver: WebDriver, values: dict[str, str]) -> None:
    """Type each parameter's value and read all of them back: the form may still be re-rendering
    when it first shows, and a value it dropped would be submitted as missing."""

    def form_holds_the_values(driver: WebDriver) -> bool:
        held = True
        for parameter, value in values.items():
            try:
                element = field(driver, parameter)
                if element.get_attribute("value") != value:
                    held = False
                    element.clear()
                    element.send_keys(value)
            except StaleElementReferenceException:
                held = False
        return held

    WebDriverWait(driver, PAGE_TIMEOUT_S, poll_frequency=0.5).until(form_holds_the_values)


def submit_until_created(driver: WebDriver, created: Callable[[], list[FlowRun]]) -> list[FlowRun]:
    """Submit the form and wait for the run it creates; submit again, as a person would, when the
    page says the server could not take it.

    On SQLite (the local stack's default) Prefect answers 503 when a request meets "database is
    locked": SQLite takes one writer at a time, and a transaction that read before another writer
    committed cannot wait its turn to write. Prefect's Python client retries a 503; its UI shows
    "Oops. Something went wrong." and leaves the form filled in (README, "Running at scale").
    Nothing was created then, so submitting again cannot start the release twice; the caller checks
    there is one run."""
    deadline = time.monotonic() + SUBMIT_TIMEOUT_S
    for _ in range(SUBMIT_ATTEMPTS):
        # Toasts fade: a refusal is one more than the fewest the page showed since the click.
        fewest = refusals_on(driver)
        visible(driver, "//form//button[@type = 'submit'][normalize-space() = 'Submit']").click()
        while time.monotonic() < deadline:
            time.sleep(0.5)
            if runs := created():
                return runs
            shown = refusals_on(driver)
            if shown > fewest:
                # The toast may have been another request's: look once more before submitting again.
                time.sleep(2)
                if runs := created():
                    return runs
                break
            fewest = min(fewest, shown)
    raise AssertionError(f"the run the form scheduled: not within {SUBMIT_TIMEOUT_S:.0f} s")


def refusals_on(driver: WebDriver) -> int:
    """How many "Oops. Something went wrong." toasts the page shows."""
    return driver.find_element(By.TAG_NAME, "body").text.count(SERVER_REFUSED)


def what_the_page_says(driver: webdriver.Chrome) -> str:
    """For a failure message: where the browser is, the page's text (toasts and field errors
    included) and what the console logged."""
    console = [entry.get("message", "") for entry in driver.get_log("browser") if entry.get("level") != "DEBUG"]
    body = driver.find_element(By.TAG_NAME, "body").text
    return f"at {driver.current_url}\n--- page ---\n{body}\n--- console ---\n" + "\n".join(console[-20:])


def test_a_release_started_from_the_ui_form_runs_on_the_worker_and_completes(
    demo: tuple[Stack, dict[str, Any]], browser: webdriver.Chrome
) -> None:
    stack, report = demo
    sample = next(s["releases"] for s in report["services"] if s["service"] == SERVICE)
    image = next(r["image_version"] for r in sample if r["name"] == "v2")
    with stack.client_settings(), get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name("release/release")

    # Deployments > release > Run > Custom run: the form Prefect draws from the flow's typed parameters.
    browser.get(f"{stack.state.ui_url}/deployments/deployment/{deployment.id}/run")
    fill_in(browser, {"service": SERVICE, "environment": "staging", "image_version": image})
    # Submitting creates the run on the server, with the parameters typed in the form.
    with stack.client_settings():
        try:
            [started] = submit_until_created(browser, lambda: runs_of_release_with(image, "staging"))
        except AssertionError as error:
            server_log = log_tail(StackPaths(state_dir=stack.state_dir).prefect_home / "server.log", lines=40)
            raise AssertionError(
                f"{error}; the browser is {what_the_page_says(browser)}\n--- server log ---\n{server_log}"
            ) from None
    assert started.parameters.get("service") == SERVICE

    # The stack's worker picks it up and releases v2 to staging.
    with stack.client_settings():
        run = wait_for("the release started from the form to end", lambda: finished_run(started.id), timeout_s=300)
    assert run.state is not None and run.state.is_completed(), run.state

    # Back on the deployment's Runs tab, the run is listed; its page says Completed.
    browser.get(f"{stack.state.ui_url}/deployments/deployment/{deployment.id}?tab=Runs")
    visible(
        browser, f"//a[contains(@class, 'flow-run-bread-crumbs__flow-run-link')][normalize-space() = '{run.name}']"
    ).click()
    WebDriverWait(browser, PAGE_TIMEOUT_S).until(conditions.url_contains(f"/runs/flow-run/{run.id}"))
    visible(browser, "//*[contains(@class, 'state-badge')][normalize-space() = 'Completed']")


def runs_of_release_with(image: str, environment: str) -> list[FlowRun]:
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=["release"])))
    return [
        run
        for run in runs
        if run.parameters.get("image_version") == image and run.parameters.get("environment") == environment
    ]
