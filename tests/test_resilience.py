"""The breaker and the rate limiter, against the real Redis, shared by every worker.

Each test has its own key prefix in Redis (removed afterwards), so tests never see each
other's state nor a running demo's. "Another worker" is another thread or another Python
process started with `subprocess`, talking to the same Redis. Windows and open times are
shortened; timing assertions are generous bounds, never exact values.
"""

import dataclasses
import json
import logging
import os
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis
from django.contrib import admin
from django.db import connections
from django.urls import path, reverse

from dualsend_app.models import BreakerTransition
from dualsend_app.partners.http import WireAnswer
from dualsend_app.partners.outcomes import decide
from dualsend_app.resilience import admin as resilience_admin
from dualsend_app.resilience import breaker, gate, redis_client
from dualsend_app.resilience.breaker import CallHealth
from tests import environment
from tests.processes import ROOT

pytestmark = pytest.mark.django_db

PARTNER = "inventory"
OTHER_PARTNER = "payment"
MIN_CALLS = 4
OPEN_SECONDS = 0.5
PROBES = 3
SLOW_CALL_SECONDS = 0.5

# This module is also the URLconf of its admin test: the admin with the breaker's page
# registered, whether or not dualsend_app/admin.py imports it yet.
assert resilience_admin.BreakerTransitionAdmin
urlpatterns = [path("admin/", admin.site.urls)]


# --- fixtures and helpers --------------------------------------------------------------


@pytest.fixture(autouse=True)
def own_redis_keys(settings):
    """A key prefix of this test's own in the tests' Redis database; cleaned up after."""
    prefix = f"test-resilience-{uuid.uuid4().hex[:12]}"
    settings.REDIS_URL = environment.REDIS_URL
    settings.DUALSEND_RESILIENCE_KEY_PREFIX = prefix
    yield prefix
    client = redis.Redis.from_url(environment.REDIS_URL)
    keys = list(client.scan_iter(match=f"{prefix}:*"))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def configure(settings):
    """configure(rate_limit="5/s", breaker={...}): change one partner's settings."""

    def apply(partner=PARTNER, *, breaker=None, **values):
        config = settings.DUALSEND_PARTNERS[partner]
        changed = dataclasses.replace(
            config, **values, breaker=dataclasses.replace(config.breaker, **(breaker or {}))
        )
        settings.DUALSEND_PARTNERS = settings.DUALSEND_PARTNERS | {partner: changed}
        return changed

    return apply


@pytest.fixture
def small_breaker(configure):
    """A breaker that opens after 4 calls at 50 % failed or slow, for half a second."""
    for partner in (PARTNER, OTHER_PARTNER):
        configure(
            partner,
            rate_limit="1000/s",
            breaker={
                "window": 10,
                "min_calls": MIN_CALLS,
                "failure_rate": 0.5,
                "slow_call_seconds": SLOW_CALL_SECONDS,
                "slow_call_rate": 0.5,
                "open_seconds": OPEN_SECONDS,
                "half_open_probes": PROBES,
            },
        )


def answer(
    status_code=200,
    *,
    error_code="",
    duration=0.01,
    headers=None,
    partner=PARTNER,
    send_key=None,
    failed_before=False,
):
    """Tell the gate about one answer, as the send path does after a call."""
    wire = WireAnswer(
        status_code=status_code, headers=headers or {}, duration_ms=round(duration * 1000)
    )
    decision = decide(status_code=status_code, error_code=error_code, is_compensation=False)
    gate.observe(
        partner, answer=wire, decision=decision, send_key=send_key, failed_before=failed_before
    )


def fail(times=1, partner=PARTNER):
    for _ in range(times):
        answer(503, partner=partner)


def succeed(times=1, *, duration=0.01, partner=PARTNER):
    for _ in range(times):
        answer(201, duration=duration, partner=partner)


def open_the_breaker():
    fail(MIN_CALLS)
    assert gate.breaker_state(PARTNER)["state"] == "open"


def wait_until_open_time_is_over():
    time.sleep(OPEN_SECONDS + 0.15)


def transitions():
    return list(
        BreakerTransition.objects.filter(partner=PARTNER)
        .order_by("at", "id")
        .values_list("from_state", "to_state")
    )


OTHER_PROCESS_PREAMBLE = """
import dataclasses, json, sys
import django
django.setup()
from django.conf import settings
settings.DUALSEND_RESILIENCE_KEY_PREFIX = sys.argv[1]
from project.partner_settings import BreakerSettings, PartnerSettings
settings.DUALSEND_PARTNERS = {
    name: PartnerSettings(**config | {"breaker": BreakerSettings(**config["breaker"])})
    for name, config in json.loads(sys.argv[2]).items()
}
from dualsend_app.partners.http import WireAnswer
from dualsend_app.partners.outcomes import decide
from dualsend_app.resilience import gate

def observe(partner, status_code, headers=None):
    wire = WireAnswer(status_code=status_code, headers=headers or {}, duration_ms=10)
    decision = decide(status_code=status_code, error_code="", is_compensation=False)
    gate.observe(partner, answer=wire, decision=decision)

def emit(value):
    if dataclasses.is_dataclass(value):
        value = dataclasses.asdict(value)
    print(json.dumps(value), flush=True)
"""


@pytest.fixture
def in_other_process(settings, tmp_path):
    """in_other_process(body): run `body` in a new Python process, return what it emit()s.

    The process has this test's settings and Redis keys, and an empty database of its own:
    it must never write into a developer's database.
    """

    def run(body):
        return _run_in_other_process(body, settings, f"sqlite:///{tmp_path / 'other.sqlite3'}")

    return run


def _run_in_other_process(body, settings, database_url):
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            OTHER_PROCESS_PREAMBLE + textwrap.dedent(body),
            settings.DUALSEND_RESILIENCE_KEY_PREFIX,
            json.dumps(
                {
                    name: dataclasses.asdict(config)
                    for name, config in settings.DUALSEND_PARTNERS.items()
                }
            ),
        ],
        cwd=ROOT,
        env=os.environ
        | {"DJANGO_SETTINGS_MODULE": "project.settings", "DATABASE_URL": database_url},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


# --- the breaker: closed → open --------------------------------------------------------


def test_breaker_does_not_open_before_min_calls(small_breaker):
    """Every call failing, but fewer than min_calls: still closed, calls go ahead."""
    fail(MIN_CALLS - 1)

    state = gate.breaker_state(PARTNER)
    assert state["state"] == "closed"
    assert (state["calls"], state["failures"]) == (MIN_CALLS - 1, MIN_CALLS - 1)
    assert gate.admit(PARTNER).allowed


def test_breaker_opens_at_the_failure_rate_once_min_calls_reached(small_breaker):
    """2 successes + 2 failures = 4 calls at 50 %: the 4th call opens it."""
    succeed(2)
    fail(1)
    assert gate.breaker_state(PARTNER)["state"] == "closed"

    fail(1)

    state = gate.breaker_state(PARTNER)
    assert state["state"] == "open"
    assert (state["calls"], state["failures"]) == (4, 2)


def test_breaker_stays_closed_below_the_failure_rate(small_breaker):
    """3 failures in 7 calls (43 % < 50 %): closed."""
    succeed(4)
    fail(3)

    assert gate.breaker_state(PARTNER)["state"] == "closed"


def test_breaker_opens_on_the_slow_call_rate(small_breaker):
    """Successful but slow calls, at the slow-call rate over min_calls, open it."""
    succeed(2)
    succeed(1, duration=SLOW_CALL_SECONDS + 0.1)
    assert gate.breaker_state(PARTNER)["state"] == "closed"

    succeed(1, duration=SLOW_CALL_SECONDS + 0.1)

    state = gate.breaker_state(PARTNER)
    assert state["state"] == "open"
    assert (state["calls"], state["failures"], state["slow"]) == (4, 0, 2)
    assert BreakerTransition.objects.get(to_state="open").reason.startswith("2 of 4 calls took")


@pytest.mark.parametrize(
    ("status_code", "error_code", "health"),
    [
        (503, "", CallHealth.FAILURE),
        (500, "", CallHealth.FAILURE),
        (408, "", CallHealth.FAILURE),
        (None, "", CallHealth.FAILURE),  # timeout, connection refused or reset
        (429, "rate_limited", CallHealth.NEUTRAL),
        (409, "idempotency_in_progress", CallHealth.NEUTRAL),
        (409, "out_of_stock", CallHealth.SUCCESS),  # a definite, healthy "no"
        (402, "card_declined", CallHealth.SUCCESS),
        (422, "invalid_request", CallHealth.SUCCESS),
        (201, "", CallHealth.SUCCESS),
    ],
)
def test_what_an_answer_says_about_health(status_code, error_code, health):
    """Transient failures count against the partner; 429 and in-progress do not count."""
    decision = decide(status_code=status_code, error_code=error_code, is_compensation=False)
    assert gate.call_health(decision) == health


def test_a_429_storm_does_not_open_the_breaker(small_breaker):
    """429s are the partner pacing us, not failing: not counted in the window at all."""
    for _ in range(MIN_CALLS * 3):
        answer(429)

    state = gate.breaker_state(PARTNER)
    assert (state["state"], state["calls"], state["failures"]) == ("closed", 0, 0)


def test_one_partners_breaker_does_not_stop_the_other(small_breaker):
    """Breakers are per partner: inventory open, payment still called."""
    open_the_breaker()

    assert not gate.admit(PARTNER).allowed
    assert gate.admit(OTHER_PARTNER).allowed


# --- open, half-open, closed again -----------------------------------------------------


def test_open_breaker_refuses_with_the_time_until_it_may_close(small_breaker, configure):
    """While open: refused, "breaker open", wait ≈ what is left of open_seconds."""
    configure(breaker={"open_seconds": 2})
    open_the_breaker()

    admission = gate.admit(PARTNER)

    assert not admission.allowed
    assert admission.reason == "breaker open"
    assert 1.0 < admission.wait_seconds <= 2.0
    open_until = gate.breaker_state(PARTNER)["open_until"]
    assert 1.0 < open_until - time.time() <= 2.5


def test_wait_is_capped_at_the_longest_countdown(small_breaker, configure, settings):
    """No refusal asks a task to wait longer than DUALSEND_MAX_COUNTDOWN_SECONDS."""
    configure(breaker={"open_seconds": 600})
    settings.DUALSEND_MAX_COUNTDOWN_SECONDS = 5
    open_the_breaker()

    assert gate.admit(PARTNER).wait_seconds == 5


@pytest.mark.django_db(transaction=True)
def test_half_open_lets_exactly_the_probes_through_across_concurrent_callers(small_breaker):
    """20 workers ask at once after open_seconds: exactly half_open_probes go ahead."""
    open_the_breaker()
    wait_until_open_time_is_over()
    start = threading.Barrier(20)

    def ask(_):
        start.wait()
        try:
            return gate.admit(PARTNER)
        finally:
            connections.close_all()

    with ThreadPoolExecutor(max_workers=20) as pool:
        admissions = list(pool.map(ask, range(20)))

    assert sum(admission.allowed for admission in admissions) == PROBES
    refused = {admission.reason for admission in admissions if not admission.allowed}
    assert refused == {"breaker half-open, probes in use"}
    assert all(0 < a.wait_seconds <= 1.0 for a in admissions if not a.allowed)
    assert transitions() == [("closed", "open"), ("open", "half_open")]


def test_failed_probes_at_the_failure_rate_open_it_again_for_a_fresh_open_time(small_breaker):
    """Half-open, two of three probes fail (50 %): open again for another open_seconds."""
    open_the_breaker()
    wait_until_open_time_is_over()
    assert all(gate.admit(PARTNER).allowed for _ in range(PROBES))

    fail(1)
    assert gate.breaker_state(PARTNER)["state"] == "half_open"
    fail(1)

    state = gate.breaker_state(PARTNER)
    assert state["state"] == "open"
    assert OPEN_SECONDS / 2 < state["open_until"] - time.time() <= OPEN_SECONDS + 0.1
    assert gate.admit(PARTNER).reason == "breaker open"
    assert transitions() == [("closed", "open"), ("open", "half_open"), ("half_open", "open")]
    reopened = BreakerTransition.objects.filter(from_state="half_open").get()
    assert reopened.reason == "2 of 3 probe calls failed (threshold 50%)"


def test_one_failed_probe_among_successes_closes_it(small_breaker):
    """A partner that fails a share of its calls, as partners do: one probe of three
    failing is below the failure rate, so the other two succeeding close it."""
    open_the_breaker()
    wait_until_open_time_is_over()
    assert all(gate.admit(PARTNER).allowed for _ in range(PROBES))

    succeed(1)
    fail(1)
    assert gate.breaker_state(PARTNER)["state"] == "half_open"
    succeed(1)

    state = gate.breaker_state(PARTNER)
    assert (state["state"], state["calls"], state["failures"]) == ("closed", 0, 0)
    closed = BreakerTransition.objects.filter(from_state="half_open").get()
    assert closed.reason == "3 probe call(s) answered, 1 failed and 0 slow: below the thresholds"


def test_slow_probes_at_the_slow_call_rate_open_it_again(small_breaker):
    """Probes that succeed, but slowly, show the partner has not recovered."""
    open_the_breaker()
    wait_until_open_time_is_over()
    assert all(gate.admit(PARTNER).allowed for _ in range(PROBES))

    succeed(2, duration=SLOW_CALL_SECONDS + 0.1)

    assert gate.breaker_state(PARTNER)["state"] == "open"


def test_all_probes_succeeding_close_it_with_an_empty_window(small_breaker):
    """half_open_probes calls go through, the next waits; all succeed → closed, window empty."""
    open_the_breaker()
    wait_until_open_time_is_over()
    assert all(gate.admit(PARTNER).allowed for _ in range(PROBES))
    assert gate.admit(PARTNER).reason == "breaker half-open, probes in use"

    succeed(PROBES)

    state = gate.breaker_state(PARTNER)
    assert (state["state"], state["calls"], state["failures"]) == ("closed", 0, 0)
    assert state["open_until"] is None
    assert gate.admit(PARTNER).allowed
    assert transitions()[-1] == ("half_open", "closed")


def test_a_probe_that_never_reports_frees_its_slot(small_breaker, configure, monkeypatch):
    """A probe's worker killed mid-call: after the call's timeouts, another call probes."""
    configure(connect_timeout=0.2, read_timeout=0.2)
    monkeypatch.setattr(breaker, "PROBE_REPORT_MARGIN_SECONDS", 0.0)
    open_the_breaker()
    wait_until_open_time_is_over()
    assert all(gate.admit(PARTNER).allowed for _ in range(PROBES))
    assert not gate.admit(PARTNER).allowed

    time.sleep(0.5)

    assert gate.admit(PARTNER).allowed


def test_a_429_probe_gives_its_slot_back(small_breaker):
    """A probe answered 429 proved nothing: its slot goes to another call."""
    open_the_breaker()
    wait_until_open_time_is_over()
    assert all(gate.admit(PARTNER).allowed for _ in range(PROBES))

    answer(429)

    assert gate.admit(PARTNER).allowed
    assert gate.breaker_state(PARTNER)["state"] == "half_open"


def test_transitions_are_recorded_and_logged(small_breaker, caplog):
    """closed → open (a warning), open → half_open, half_open → closed (info), as rows."""
    caplog.set_level(logging.INFO, logger="dualsend_app.resilience.breaker")
    open_the_breaker()
    wait_until_open_time_is_over()
    for _ in range(PROBES):
        gate.admit(PARTNER)
    succeed(PROBES)

    assert transitions() == [("closed", "open"), ("open", "half_open"), ("half_open", "closed")]
    logged = [
        (record.levelname, record.getMessage())
        for record in caplog.records
        if record.name == "dualsend_app.resilience.breaker"
    ]
    assert [level for level, _ in logged] == ["WARNING", "INFO", "INFO"]
    assert "inventory closed -> open: 4 of 4 calls failed" in logged[0][1]
    opened = BreakerTransition.objects.get(to_state="open")
    assert "4 of 4 calls failed in the last 10 s" in opened.reason


def test_every_process_sees_the_same_breaker(small_breaker, configure, in_other_process):
    """Failures counted in one process and in another add up, and both see it open."""
    configure(breaker={"open_seconds": 60})  # still open when the other process asks
    emitted = in_other_process(
        """
        for _ in range(2):
            observe("inventory", 503)
        emit(gate.breaker_state("inventory"))
        """
    )
    assert emitted[0]["state"] == "closed"
    assert emitted[0]["failures"] == 2

    fail(MIN_CALLS - 2)
    assert gate.breaker_state(PARTNER)["state"] == "open"

    state, admission = in_other_process(
        """
        emit(gate.breaker_state("inventory"))
        emit(gate.admit("inventory"))
        """
    )
    assert state["state"] == "open"
    assert (state["calls"], state["failures"]) == (MIN_CALLS, MIN_CALLS)
    assert admission["allowed"] is False
    assert admission["reason"] == "breaker open"


# --- the breaker judges the partner, not one send --------------------------------------

FRESH_FIRST_SECONDS = min(breaker.FRESH_SENDS_FIRST_SECONDS, OPEN_SECONDS)
# Where a test must see a failed-before send held back, it opens for this long: fresh
# sends then keep the probes for 2 s, ample on a busy machine.
PATIENT_OPEN_SECONDS = 2.0


def poison_fails(times=1, key="poison-send", *, failed_before_first=False):
    """One send's calls, all 503: after its first, it is a send that failed before."""
    for number in range(times):
        answer(503, send_key=key, failed_before=failed_before_first or number > 0)


def healthy_sends(count, prefix="healthy"):
    """`count` different sends, each succeeding at its first call."""
    for number in range(count):
        answer(201, send_key=f"{prefix}-{number}")


def open_then_wait(configure=None):
    """Open the breaker and let its open time pass; with `configure`, open it for
    PATIENT_OPEN_SECONDS instead."""
    open_seconds = OPEN_SECONDS
    if configure is not None:
        open_seconds = PATIENT_OPEN_SECONDS
        configure(breaker={"open_seconds": open_seconds})
    open_the_breaker()
    time.sleep(open_seconds + 0.15)


def test_one_send_failing_20_times_counts_as_one_failure(small_breaker):
    """A poison send retried 20 times is one call and one failure in the window."""
    poison_fails(20)

    state = gate.breaker_state(PARTNER)
    assert (state["state"], state["calls"], state["failures"]) == ("closed", 1, 1)

    healthy_sends(MIN_CALLS - 1)  # min_calls reached: 1 failure in 4 is 25 %

    state = gate.breaker_state(PARTNER)
    assert (state["state"], state["calls"], state["failures"]) == ("closed", MIN_CALLS, 1)
    assert gate.admit(PARTNER).allowed


def test_a_send_counts_with_its_latest_call(small_breaker):
    """A send that failed, then succeeded, is one call and no failure; slow likewise."""
    answer(503, send_key="send-1", duration=SLOW_CALL_SECONDS + 0.1)
    answer(201, send_key="send-1", failed_before=True)

    state = gate.breaker_state(PARTNER)
    assert (state["calls"], state["failures"], state["slow"]) == (1, 0, 0)


def test_different_sends_failing_still_open_it(small_breaker):
    """The partner failing for min_calls different sends opens it, as before."""
    for number in range(MIN_CALLS):
        answer(503, send_key=f"send-{number}")

    state = gate.breaker_state(PARTNER)
    assert (state["state"], state["calls"], state["failures"]) == ("open", 4, 4)


def test_half_open_keeps_its_probes_for_fresh_sends(small_breaker, configure):
    """Half-open: a send that failed before waits; fresh sends take the probes."""
    open_then_wait(configure)

    held = gate.admit(PARTNER, failed_before=True)
    fresh = [gate.admit(PARTNER) for _ in range(PROBES)]
    still_held = gate.admit(PARTNER, failed_before=True)

    assert not held.allowed
    assert held.reason == "breaker half-open, probes go to sends that have not failed"
    assert 0 < held.wait_seconds <= PATIENT_OPEN_SECONDS
    assert all(admission.allowed for admission in fresh)
    assert not still_held.allowed
    assert gate.breaker_state(PARTNER)["state"] == "half_open"
    # The send that was held turned it half-open: recorded once, by that call.
    assert transitions() == [("closed", "open"), ("open", "half_open")]


def test_a_send_that_failed_before_is_probed_once_no_fresh_send_asks(small_breaker, configure):
    """Only retries waiting (a partner left with poison traffic): they still probe, once
    no fresh send has asked for a while; a fresh send asking puts that off again."""
    open_then_wait(configure)  # fresh sends first for 2 s
    assert not gate.admit(PARTNER, failed_before=True).allowed
    time.sleep(1.2)
    assert gate.admit(PARTNER).allowed  # a fresh send asks: the retries wait longer
    time.sleep(1.2)  # 2.4 s into half-open, 1.2 s after the fresh send asked
    assert not gate.admit(PARTNER, failed_before=True).allowed

    time.sleep(1.2)

    assert gate.admit(PARTNER, failed_before=True).allowed


def test_a_poison_send_cannot_reopen_it_when_fresh_probes_succeed(small_breaker):
    """The poison send's probe fails, again and again: its slot is freed each time, the
    breaker stays half-open, and the fresh probes that succeed close it."""
    open_then_wait()
    time.sleep(FRESH_FIRST_SECONDS + 0.1)
    assert gate.admit(PARTNER, failed_before=True).allowed  # nobody fresh: poison probes

    poison_fails(4, failed_before_first=True)  # and fails, as it always does

    assert gate.breaker_state(PARTNER)["state"] == "half_open"
    assert all(gate.admit(PARTNER).allowed for _ in range(PROBES))  # its slot came back
    healthy_sends(PROBES)
    state = gate.breaker_state(PARTNER)
    assert (state["state"], state["calls"], state["failures"]) == ("closed", 0, 0)
    assert transitions() == [("closed", "open"), ("open", "half_open"), ("half_open", "closed")]


def test_different_sends_failing_again_as_probes_do_reopen_it(small_breaker):
    """Probes of half_open_probes different failed-before sends all fail, nothing
    succeeding: that is the partner, not one order. Open again, with the reason."""
    open_then_wait()
    time.sleep(FRESH_FIRST_SECONDS + 0.1)
    for number in range(PROBES - 1):
        assert gate.admit(PARTNER, failed_before=True).allowed
        answer(503, send_key=f"retry-{number}", failed_before=True)
    assert gate.breaker_state(PARTNER)["state"] == "half_open"

    answer(503, send_key=f"retry-{PROBES - 1}", failed_before=True)

    assert gate.breaker_state(PARTNER)["state"] == "open"
    assert transitions()[-1] == ("half_open", "open")
    reopened = BreakerTransition.objects.filter(from_state="half_open").get()
    assert reopened.reason.startswith("probes of 3 different sends that had failed before")


def test_a_probe_success_clears_the_tally_of_sends_failing_again(small_breaker):
    """Two failed-before sends fail, a probe succeeds, two more fail: still half-open."""
    open_then_wait()
    assert gate.admit(PARTNER).allowed
    answer(503, send_key="retry-1", failed_before=True)
    answer(503, send_key="retry-2", failed_before=True)
    answer(201, send_key="retry-3", failed_before=True)
    answer(503, send_key="retry-4", failed_before=True)
    answer(503, send_key="retry-5", failed_before=True)

    assert gate.breaker_state(PARTNER)["state"] == "half_open"


def test_fresh_sends_failed_probes_reopen_it_at_the_failure_rate(small_breaker):
    """Sends that never failed before failing as probes: the partner, open again."""
    open_then_wait()
    assert all(gate.admit(PARTNER).allowed for _ in range(PROBES))

    answer(503, send_key="fresh-send-1")
    answer(503, send_key="fresh-send-2")

    assert gate.breaker_state(PARTNER)["state"] == "open"


# --- our configured rate ---------------------------------------------------------------


def test_rate_limit_lets_the_configured_number_through_then_says_how_long(configure):
    """5/s: five calls go, the sixth waits more than 0 and at most a second."""
    configure(rate_limit="5/s")

    admissions = [gate.admit(PARTNER) for _ in range(6)]

    assert [a.allowed for a in admissions] == [True] * 5 + [False]
    assert admissions[-1].reason == "rate limit"
    assert 0 < admissions[-1].wait_seconds <= 1.0


def test_a_call_the_breaker_refuses_spends_no_slot_of_our_rate(small_breaker, configure):
    """Open breaker, 3/minute: refused calls leave the rate whole; once it closes,
    all three slots are there."""
    configure(rate_limit="3/minute")
    open_the_breaker()
    assert all(gate.admit(PARTNER).reason == "breaker open" for _ in range(5))
    wait_until_open_time_is_over()
    assert all(gate.admit(PARTNER).allowed for _ in range(PROBES))
    succeed(PROBES)  # closed again

    assert not gate.admit(PARTNER).allowed  # the probes took the three slots, nothing else


def test_admit_is_one_redis_round_trip(small_breaker, monkeypatch):
    """Pause, rate and breaker asked in one script: one command per admission."""
    client = redis_client.get_redis()
    commands = []
    execute = client.execute_command

    def counting(*args, **kwargs):
        commands.append(args[0])
        return execute(*args, **kwargs)

    gate.admit(PARTNER)  # the script is loaded once per process
    monkeypatch.setattr(client, "execute_command", counting)

    assert gate.admit(PARTNER).allowed
    assert commands == ["EVALSHA"]


def test_rate_limit_is_shared_by_every_process(configure, in_other_process):
    """Three calls in another process and two here use up 5 per minute together.

    A minute, not a second: the window must outlive the other process's start-up.
    """
    configure(rate_limit="5/minute")
    emitted = in_other_process(
        """
        for _ in range(3):
            emit(gate.admit("inventory"))
        """
    )
    assert all(admission["allowed"] for admission in emitted)

    admissions = [gate.admit(PARTNER) for _ in range(3)]

    assert [a.allowed for a in admissions] == [True, True, False]
    assert admissions[-1].reason == "rate limit"
    assert 0 < admissions[-1].wait_seconds <= 60


# --- what the partner asks for ---------------------------------------------------------


def test_retry_after_from_one_worker_pauses_every_worker(small_breaker, in_other_process):
    """A 429 with Retry-After: 3 seen in another process: here, wait ≈ 3 s before calling."""
    in_other_process(
        """
        observe("inventory", 429, headers={"Retry-After": "3"})
        """
    )

    admission = gate.admit(PARTNER)

    assert not admission.allowed
    assert admission.reason == "partner asked to wait"
    assert 1.5 < admission.wait_seconds <= 3.0
    assert gate.breaker_state(PARTNER)["calls"] == 0  # and the 429 is no failure


def test_a_shorter_retry_after_does_not_cut_an_earlier_pause(small_breaker):
    """Retry-After 3, then Retry-After 1 from a later answer: still ≈ 3 s."""
    answer(429, headers={"Retry-After": "3"})
    answer(503, headers={"retry-after": "1"})

    assert gate.admit(PARTNER).wait_seconds > 2.0


def test_remaining_quota_at_slowdown_pauses_until_reset(small_breaker, configure):
    """X-RateLimit-Remaining at slowdown_below with X-RateLimit-Reset 2: wait ≈ 2 s."""
    configure(slowdown_below=1)
    answer(201, headers={"X-RateLimit-Remaining": "1", "X-RateLimit-Reset": "2"})

    admission = gate.admit(PARTNER)

    assert not admission.allowed
    assert admission.reason == "partner asked to wait"
    assert 1.0 < admission.wait_seconds <= 2.0


def test_remaining_quota_above_slowdown_does_not_pause(small_breaker, configure):
    """Quota left above slowdown_below: calls go ahead."""
    configure(slowdown_below=1)
    answer(201, headers={"X-RateLimit-Remaining": "2", "X-RateLimit-Reset": "2"})

    assert gate.admit(PARTNER).allowed


# --- Redis down, configuration, admin --------------------------------------------------


def test_redis_unreachable_fails_open(small_breaker, settings, caplog, monkeypatch):
    """No Redis: calls go ahead, nothing raises, and a warning says why."""
    monkeypatch.setattr(redis_client.unreachable_warnings, "last", float("-inf"))
    settings.REDIS_URL = "redis://127.0.0.1:1/0"

    admission = gate.admit(PARTNER)
    fail(MIN_CALLS)

    assert admission == gate.Admission(allowed=True)
    assert "Redis unreachable" in caplog.text
    assert "failing open" in caplog.text


@pytest.mark.urls(__name__)
def test_admin_shows_transitions_and_each_breakers_state_now(small_breaker, admin_client):
    """The list page: the live state of every partner's breaker, then the transitions."""
    open_the_breaker()

    response = admin_client.get(reverse("admin:dualsend_app_breakertransition_changelist"))

    assert response.status_code == 200
    now = {row["partner"]: row for row in response.context["breakers_now"]}
    assert now[PARTNER]["state"] == "open"
    assert now[PARTNER]["failures"] == MIN_CALLS
    assert now[OTHER_PARTNER]["state"] == "closed"
    assert b"Breakers now" in response.content
    assert response.context["cl"].result_count == 1


def test_admin_cannot_add_change_or_delete_transitions(rf):
    """Transitions are a record, not a form."""
    model_admin = resilience_admin.BreakerTransitionAdmin(BreakerTransition, admin.site)
    request = rf.get("/")

    assert not model_admin.has_add_permission(request)
    assert not model_admin.has_change_permission(request)
    assert not model_admin.has_delete_permission(request)


def test_admission_is_a_small_frozen_value():
    """What the send path receives: allowed, how long to wait, and why."""
    admission = gate.Admission(allowed=False, wait_seconds=1.5, reason="rate limit")

    assert dataclasses.asdict(admission) == {
        "allowed": False,
        "wait_seconds": 1.5,
        "reason": "rate limit",
    }
    with pytest.raises(dataclasses.FrozenInstanceError):
        admission.allowed = True
