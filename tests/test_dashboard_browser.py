"""The dashboard in a real browser, on the real stack.

Debian's chromium (`apt-get install chromium`; scripts/test installs it when it runs as
root), headless, driven by Playwright for Python against that system browser: no
`playwright install`, no download. gunicorn serves the app as the README runs it; the
session's Celery worker and the partner simulators settle the order the test places.

On a machine without chromium the test is skipped, saying why; under CI (CI=true) it
fails instead, so that CI cannot pass without it. With DUALSEND_SCREENSHOT_DIR set, it
also saves the page as <dir>/dashboard.png (the README's picture is docs/dashboard.png:
`DUALSEND_SCREENSHOT_DIR=docs scripts/test tests/test_dashboard_browser.py`).
"""

import datetime
import os
import random
from pathlib import Path

import pytest
import requests
from django.contrib.auth import get_user_model
from django.utils import timezone

from dualsend_app.models import Attempt, Order, Send
from dualsend_app.partners.outcomes import AnswerOutcome
from tests.factories import create_attempt, create_order, create_send
from tests.helpers import API_TOKEN, order_body, wait_final
from tests.processes import Gunicorn

CHROMIUM = Path(os.environ.get("DUALSEND_CHROMIUM", "/usr/bin/chromium"))
SCREENSHOT_DIR = os.environ.get("DUALSEND_SCREENSHOT_DIR")
STAFF_USER, STAFF_PASSWORD = "dashboard-operator", "a-password-for-this-test-only"
# The page refreshes itself every second here (`?refresh=1`), every 5 s by default.
DASHBOARD = "/dashboard/?refresh=1"
# How long the page may take to show a change: a refresh period and a busy machine.
UPDATE_TIMEOUT_MS = 10_000


def browser_missing() -> str | None:
    """Why this machine cannot run the test, or None."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright is not installed: .venv/bin/pip install -e '.[dev]'"
    if not CHROMIUM.exists():
        return (
            f"no chromium at {CHROMIUM}: `apt-get install chromium` "
            "(scripts/test installs it when run as root)"
        )
    return None


UNDER_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
MISSING = browser_missing()
if MISSING is not None and not UNDER_CI:
    # Before the worker and gunicorn start: nothing to wait for.
    pytest.skip(MISSING, allow_module_level=True)


@pytest.fixture(scope="module")
def sync_orm_beside_playwright():
    """Playwright's sync API keeps an asyncio loop running in this thread (in a greenlet of
    its own), and Django then refuses every ORM call as if made from a coroutine. Ours are
    plain blocking calls between two browser steps, never inside the loop: allowed."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "1")
        yield


@pytest.fixture(scope="module")
def browser(sync_orm_beside_playwright):
    if MISSING is not None:
        pytest.fail(f"CI must run the browser test: {MISSING}")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            headless=True,
            # Containers give /dev/shm 64 MB, too little for chromium's renderer.
            args=["--disable-dev-shm-usage"],
        )
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def web(stack_env):
    """gunicorn on the test database, as the README runs it."""
    env, _ = stack_env
    server = Gunicorn("web-dashboard", env)
    yield server
    server.stop()


def minutes_ago(minutes: float) -> datetime.datetime:
    return timezone.now() - datetime.timedelta(minutes=minutes)


def an_hour_of_orders():
    """Orders over the last 50 minutes, of every kind of ending, with their calls: a
    dashboard with something to show. Orders of two hours ago too, which it leaves out."""
    shuffle = random.Random(10)
    kinds = [Order.Status.COMPLETED] * 8 + [
        Order.Status.COMPENSATED,
        Order.Status.FAILED,
        Order.Status.NEEDS_ATTENTION,
    ]
    for minute in range(2, 50, 2):
        for _ in range(shuffle.randint(1, 3)):
            an_order(shuffle.choice(kinds), minutes_ago(minute + shuffle.random()), shuffle)
    for minute in (7.5, 33.5):
        an_order(Order.Status.NEEDS_ATTENTION, minutes_ago(minute), shuffle)
    an_order(Order.Status.COMPLETED, minutes_ago(120), shuffle)


REASONS = {
    Order.Status.NEEDS_ATTENTION: "compensation did not succeed: payment.refund failed "
    "(unknown: http 503 unavailable)",
    Order.Status.COMPENSATED: "undone: payment.refund",
    Order.Status.FAILED: "both partners said no",
}


def an_order(status, created_at, shuffle):
    order = create_order(
        header_sends=False,
        status=status,
        status_reason=REASONS.get(status, ""),
        created_at=created_at,
    )
    for operation, base_ms in (
        (Send.Operation.INVENTORY_RESERVE, 40),
        (Send.Operation.PAYMENT_CHARGE, 90),
    ):
        send = create_send(order, operation, created_at=created_at)
        number = 1
        if status != Order.Status.COMPLETED and operation == Send.Operation.PAYMENT_CHARGE:
            create_attempt(
                send,
                number,
                started_at=created_at,
                duration_ms=shuffle.randint(900, 1500),
                status_code=503,
                error="unavailable",
                outcome=AnswerOutcome.RETRY,
                will_retry=True,
                retry_in_seconds=0.4,
            )
            number += 1
        create_attempt(
            send,
            number,
            started_at=created_at + datetime.timedelta(seconds=number - 1),
            duration_ms=base_ms + int(shuffle.expovariate(1 / 25)),
        )


def log_in(page, base_url):
    """Through the admin's login page, as a person would; it sends them on to the page."""
    get_user_model().objects.create_user(STAFF_USER, password=STAFF_PASSWORD, is_staff=True)
    page.goto(f"{base_url}/admin/login/?next={requests.utils.quote(DASHBOARD)}")
    page.fill("#id_username", STAFF_USER)
    page.fill("#id_password", STAFF_PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url(f"{base_url}{DASHBOARD}")


def last_hour(**filters):
    """Orders the chart's hour holds (the seeded ones are all within 50 minutes)."""
    return Order.objects.filter(created_at__gte=minutes_ago(55), **filters).count()


def reserve_calls(minutes=15):
    """inventory.reserve's calls in the last `minutes` (the page's default window: 15)."""
    return Attempt.objects.filter(
        send__operation=Send.Operation.INVENTORY_RESERVE, started_at__gte=minutes_ago(minutes)
    ).count()


@pytest.mark.integration
def test_the_dashboard_shows_the_databases_numbers_and_follows_a_new_order_live(live, web, browser):
    """Logged in through the admin, the page shows what the database holds; an order
    placed through the API then shows on it by the page's own refresh, with no reload."""
    from playwright.sync_api import expect

    an_hour_of_orders()
    page = browser.new_page(viewport={"width": 1360, "height": 1100})
    script_errors = []
    page.on("pageerror", lambda error: script_errors.append(error))
    log_in(page, web.url)

    expect(page.locator("#orders-total")).to_have_text(str(last_hour()))
    completed = last_hour(status=Order.Status.COMPLETED)
    expect(page.locator("#count-completed")).to_have_text(str(completed))
    waiting = Order.objects.filter(status=Order.Status.NEEDS_ATTENTION).count()
    expect(page.locator("#needs-attention-count")).to_have_text(str(waiting))
    expect(page.locator("#needs-attention-body tr[data-order]")).to_have_count(waiting)
    reserve = page.locator('#calls-body tr[data-operation="inventory.reserve"] .calls')
    expect(reserve).to_have_text(str(reserve_calls()))
    for partner in ("inventory", "payment"):
        expect(page.locator(f"#breaker-{partner} .breaker-state")).to_have_text("closed")
    expect(page.locator("#refresh-status")).to_have_text("live: refreshes every 1 s")
    # Gone if the page were loaded again: the changes below come from its own refresh.
    page.evaluate("window.stillTheSamePage = true")

    response = requests.post(
        f"{web.url}/api/orders",
        json=order_body(),
        headers={"Authorization": f"Bearer {API_TOKEN}"},
        timeout=10,
    )
    assert response.status_code == 202, response.text
    order = wait_final(response.json()["id"])
    assert order.status == Order.Status.COMPLETED

    expect(page.locator("#orders-total")).to_have_text(str(last_hour()), timeout=UPDATE_TIMEOUT_MS)
    expect(page.locator("#count-completed")).to_have_text(
        str(completed + 1), timeout=UPDATE_TIMEOUT_MS
    )
    expect(reserve).to_have_text(str(reserve_calls()), timeout=UPDATE_TIMEOUT_MS)
    assert page.evaluate("window.stillTheSamePage") is True
    if SCREENSHOT_DIR:
        Path(SCREENSHOT_DIR).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SCREENSHOT_DIR) / "dashboard.png"), full_page=True)

    # Another window: the calls are counted again over it, at once, still without a reload.
    page.select_option("#window-select", "86400")
    expect(page.locator("#window-label")).to_have_text("24 h")
    expect(reserve).to_have_text(str(reserve_calls(minutes=24 * 60)))
    assert "window=86400" in page.url
    assert page.evaluate("window.stillTheSamePage") is True
    assert script_errors == []
