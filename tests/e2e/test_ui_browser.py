"""The Prefect UI of the local stack in a real browser (Debian's Chromium, headless): a person opens
the runs page, finds the release that finished, and reads its Markdown summary artifact.

The stack is real (`switchyard up`); the release ran on its worker from the release deployment.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions as conditions
from selenium.webdriver.support.ui import WebDriverWait

from tests.e2e.stack_support import SERVICE, Stack, build_image, running_stack, start_run

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
ENV = "staging"
COMMIT = "3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c"
PAGE_TIMEOUT_S = 30

# A finished release run in the runs list: its flow is "release", its state badge says Completed.
RELEASE_RUN_LINK = (
    "//div[contains(@class, 'flow-run-list-item')]"
    "[.//*[contains(@class, 'state-list-item--completed')]]"
    "[.//*[contains(@class, 'flow-run-bread-crumbs__flow-link')]//a[normalize-space() = 'release']]"
    "//a[contains(@class, 'flow-run-bread-crumbs__flow-run-link')]"
)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, shared_dir: Path) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("ui-stack"), shared_dir) as stack:
        yield stack


@pytest.fixture(scope="module")
def released(stack: Stack) -> tuple[str, str]:
    """(flow run name, image) of a release that finished on the stack's worker."""
    with stack.client_settings():
        image = build_image("1.0.0", COMMIT)
        run = start_run("release", {"service": SERVICE, "environment": ENV, "image_version": image})
    assert run.state is not None and run.state.is_completed(), run.state
    return run.name, image


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
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
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def visible(driver: WebDriver, xpath: str) -> WebElement:
    return WebDriverWait(driver, PAGE_TIMEOUT_S).until(conditions.visibility_of_element_located((By.XPATH, xpath)))


def test_the_ui_shows_a_finished_release_and_its_summary(
    stack: Stack, released: tuple[str, str], browser: WebDriver
) -> None:
    run_name, image = released
    browser.get(f"{stack.state.ui_url}/runs")

    # The runs page lists the release run as completed; open it.
    link = visible(browser, RELEASE_RUN_LINK)
    assert link.text == run_name
    link.click()
    WebDriverWait(browser, PAGE_TIMEOUT_S).until(conditions.url_contains("/runs/flow-run/"))
    visible(browser, "//*[contains(@class, 'state-badge')][normalize-space() = 'Completed']")

    # Its Artifacts tab holds the Markdown summary (key release-<service>-<environment>); open it.
    visible(browser, "//li[contains(@class, 'p-tab')][normalize-space() = 'Artifacts']").click()
    key = f"release-{SERVICE}-{ENV}"
    card = visible(
        browser,
        f"//a[contains(@href, '/artifacts/artifact/')][.//*[normalize-space() = '{key}']]",
    )
    assert "MARKDOWN" in card.text.upper()
    card.click()

    # The summary is rendered: its heading names the service, the image, the environment and the outcome.
    heading = visible(browser, f"//h1[contains(normalize-space(), 'Release of {SERVICE} {image} to {ENV}')]")
    assert heading.text.endswith(f"Release of {SERVICE} {image} to {ENV}: PROMOTED")
    assert "Timeline" in browser.find_element(By.TAG_NAME, "body").text
