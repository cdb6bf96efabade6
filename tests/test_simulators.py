"""The partner simulators keep the partner API contract (partner-apis.md), plus their knobs.

The simulator runs as a real subprocess on free 127.0.0.1 ports, exactly as
the demo and the integration tests start it, and every test talks to it over
HTTP with ``requests``. No Django database is involved.
"""

import argparse
import concurrent.futures
import json
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from devstack import SimulatorControl, Stack, add_simulator_arguments, free_port
from tests.helpers import wait_until
from tests.processes import ROOT

pytestmark = pytest.mark.simulators

INVENTORY_TOKEN = "test-inventory-token"
PAYMENT_KEY = "test-payment-key"
HTTP_TIMEOUT_S = 5.0
RANDOM_ERROR_STATUSES = {500, 502, 503, 504, 408, 429}


# --- the simulator process ------------------------------------------------------


@dataclass
class RunningSimulator:
    process: subprocess.Popen
    inventory_url: str
    payment_url: str
    inventory: SimulatorControl
    payment: SimulatorControl
    stdout_lines: list[str]


def start_simulator(log_path: Path, *extra_args: str) -> RunningSimulator:
    inventory_port, payment_port = free_port(), free_port()
    command = [
        sys.executable,
        "-m",
        "devstack.simulators",
        "--inventory-port",
        str(inventory_port),
        "--payment-port",
        str(payment_port),
        "--inventory-token",
        INVENTORY_TOKEN,
        "--payment-key",
        PAYMENT_KEY,
        "--latency-ms",
        "0",
        "--rate-limit",
        "10000/1",
        "--seed",
        "7",
        *extra_args,
    ]
    with log_path.open("w") as log:
        process = subprocess.Popen(
            command, cwd=ROOT, stdout=subprocess.PIPE, stderr=log, text=True
        )
    simulator = RunningSimulator(
        process=process,
        inventory_url=f"http://127.0.0.1:{inventory_port}",
        payment_url=f"http://127.0.0.1:{payment_port}",
        inventory=SimulatorControl(f"http://127.0.0.1:{inventory_port}"),
        payment=SimulatorControl(f"http://127.0.0.1:{payment_port}"),
        stdout_lines=[],
    )
    try:
        simulator.inventory.wait_ready(timeout=15)
        simulator.payment.wait_ready(timeout=5)
    except TimeoutError:
        stop_simulator(simulator)
        pytest.fail(f"simulator did not start:\n{log_path.read_text()}")
    # Both lines are printed and flushed before the health endpoints answer.
    simulator.stdout_lines = [process.stdout.readline().strip() for _ in range(2)]
    return simulator


def stop_simulator(simulator: RunningSimulator) -> int:
    simulator.process.send_signal(signal.SIGTERM)
    try:
        return simulator.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        simulator.process.kill()
        simulator.process.wait()
        raise
    finally:
        simulator.process.stdout.close()
        simulator.inventory.close()
        simulator.payment.close()


@pytest.fixture(scope="module")
def simulator(tmp_path_factory):
    running = start_simulator(tmp_path_factory.mktemp("simulator") / "simulator.log")
    yield running
    stop_simulator(running)


@pytest.fixture(autouse=True)
def fresh_simulator(simulator):
    """Each test starts from an empty ledger, no keys, no scripts, start-up knobs."""
    simulator.inventory.reset()


@pytest.fixture
def order_id() -> str:
    return f"order-{uuid.uuid4().hex[:12]}"


# --- partner calls, as a client of the contract makes them -----------------------


def new_key() -> str:
    return f"key-{uuid.uuid4().hex}"


def inventory_headers(
    key: str | None, request_id: str | None = None, token: str = INVENTORY_TOKEN
) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    if key is not None:
        headers["Idempotency-Key"] = key
    if request_id is not None:
        headers["X-Request-ID"] = request_id
    return headers


def payment_headers(key: str | None, request_id: str | None = None) -> dict[str, str]:
    headers = inventory_headers(key, request_id)
    del headers["Authorization"]  # requests adds Basic auth from auth=
    return headers


def reservation_body(order_id: str, sku: str = "SKU-1", quantity: int = 2) -> bytes:
    payload = {"order_id": order_id, "items": [{"sku": sku, "quantity": quantity}]}
    return json.dumps(payload).encode()


def charge_body(order_id: str, source: str = "tok_visa", amount: int = 1999) -> bytes:
    payload = {"order_id": order_id, "amount": amount, "currency": "usd", "source": source}
    return json.dumps(payload).encode()


def reserve(sim, order_id, *, key=None, request_id=None, body=None, headers=None):
    return requests.post(
        f"{sim.inventory_url}/v1/reservations",
        data=body if body is not None else reservation_body(order_id),
        headers=headers or inventory_headers(key or new_key(), request_id),
        timeout=HTTP_TIMEOUT_S,
    )


def release(sim, order_id, *, key=None, request_id=None):
    return requests.delete(
        f"{sim.inventory_url}/v1/reservations/{order_id}",
        headers=inventory_headers(key or new_key(), request_id),
        timeout=HTTP_TIMEOUT_S,
    )


def charge(sim, order_id, *, key=None, request_id=None, body=None, auth=(PAYMENT_KEY, "")):
    return requests.post(
        f"{sim.payment_url}/v1/charges",
        data=body if body is not None else charge_body(order_id),
        headers=payment_headers(key or new_key(), request_id),
        auth=auth,
        timeout=HTTP_TIMEOUT_S,
    )


def refund(sim, order_id, *, key=None, amount=1999):
    return requests.post(
        f"{sim.payment_url}/v1/refunds",
        data=json.dumps({"order_id": order_id, "amount": amount}).encode(),
        headers=payment_headers(key or new_key()),
        auth=(PAYMENT_KEY, ""),
        timeout=HTTP_TIMEOUT_S,
    )


def error_code(response: requests.Response) -> str:
    return response.json()["error"]["code"]


# --- start-up and the common envelope ---------------------------------------------


def test_prints_one_listening_line_per_partner(simulator):
    """On start each partner prints where it listens, one line each."""
    assert simulator.stdout_lines == [
        f"inventory simulator listening on {simulator.inventory_url}",
        f"payment simulator listening on {simulator.payment_url}",
    ]


def test_every_answer_echoes_request_id_and_carries_rate_limit_headers(simulator, order_id):
    """Success, error and control answers all echo X-Request-ID and carry X-RateLimit-*."""
    answers = [
        reserve(simulator, order_id, request_id="corr-1"),
        reserve(
            simulator,
            order_id,
            request_id="corr-1",
            headers=inventory_headers(new_key(), "corr-1", token="wrong"),
        ),
        requests.get(
            f"{simulator.inventory_url}/_sim/health",
            headers={"X-Request-ID": "corr-1"},
            timeout=HTTP_TIMEOUT_S,
        ),
    ]
    for response in answers:
        assert response.headers["X-Request-ID"] == "corr-1"
        assert int(response.headers["X-RateLimit-Limit"]) == 10000
        assert 0 <= int(response.headers["X-RateLimit-Remaining"]) <= 10000
        assert int(response.headers["X-RateLimit-Reset"]) >= 1


def test_unknown_path_answers_the_error_shape(simulator):
    """Even a route that does not exist answers {"error": {"code", "message"}}."""
    response = requests.get(f"{simulator.inventory_url}/v1/nothing", timeout=HTTP_TIMEOUT_S)

    assert response.status_code == 404
    assert set(response.json()["error"]) == {"code", "message"}


# --- auth -------------------------------------------------------------------------


@pytest.mark.parametrize("token", ["wrong-token", ""])
def test_inventory_refuses_a_wrong_or_missing_bearer_token(simulator, order_id, token):
    """Inventory answers 401 unauthorized without the right Bearer token, and acts not."""
    headers = inventory_headers(new_key(), token=token)
    if not token:
        del headers["Authorization"]

    response = reserve(simulator, order_id, headers=headers)

    assert response.status_code == 401
    assert error_code(response) == "unauthorized"
    assert response.json()["error"]["message"]
    assert simulator.inventory.ledger(order_id)["reserved"] == 0
    assert [r["status"] for r in simulator.inventory.requests_log(order_id=order_id)] == [401]


@pytest.mark.parametrize(
    "auth",
    [("wrong-key", ""), (PAYMENT_KEY, "a-password"), None],
    ids=["wrong-key", "non-empty-password", "missing"],
)
def test_payment_refuses_anything_but_basic_key_and_empty_password(simulator, order_id, auth):
    """Payment answers 401 unless Basic auth has the key as user and an empty password."""
    response = charge(simulator, order_id, auth=auth)

    assert response.status_code == 401
    assert error_code(response) == "unauthorized"
    assert simulator.payment.ledger(order_id)["charged"] == 0


# --- success shapes -----------------------------------------------------------------


def test_reservation_succeeds_with_the_contract_shape(simulator, order_id):
    """POST /v1/reservations answers 201 with res_ id, order id, status and items."""
    response = reserve(simulator, order_id, request_id="corr-r")

    assert response.status_code == 201
    body = response.json()
    assert body["reservation_id"].startswith("res_")
    assert body == {
        "reservation_id": body["reservation_id"],
        "order_id": order_id,
        "status": "reserved",
        "items": [{"sku": "SKU-1", "quantity": 2}],
    }
    assert "Idempotent-Replayed" not in response.headers


def test_charge_succeeds_with_the_contract_shape(simulator, order_id):
    """POST /v1/charges answers 201 with ch_ id, captured status, amount and currency."""
    response = charge(simulator, order_id)

    assert response.status_code == 201
    body = response.json()
    assert body["charge_id"].startswith("ch_")
    assert body == {
        "charge_id": body["charge_id"],
        "order_id": order_id,
        "status": "captured",
        "amount": 1999,
        "currency": "usd",
    }


# --- validation -------------------------------------------------------------------


def test_malformed_json_is_400_invalid_json(simulator, order_id):
    """A body that is not JSON answers 400 invalid_json."""
    response = reserve(simulator, order_id, body=b"{not json")

    assert response.status_code == 400
    assert error_code(response) == "invalid_json"


@pytest.mark.parametrize(
    "payload",
    [
        {"order_id": "", "items": [{"sku": "SKU-1", "quantity": 1}]},
        {"order_id": "o", "items": []},
        {"order_id": "o", "items": [{"sku": "", "quantity": 1}]},
        {"order_id": "o", "items": [{"sku": "SKU-1", "quantity": 0}]},
        {"order_id": "o", "items": [{"sku": "SKU-1", "quantity": True}]},
        ["not", "an", "object"],
    ],
)
def test_invalid_reservation_fields_are_422_invalid_request(simulator, payload):
    """A reservation with a bad order_id or items answers 422 invalid_request."""
    response = reserve(simulator, "o", body=json.dumps(payload).encode())

    assert response.status_code == 422
    assert error_code(response) == "invalid_request"


@pytest.mark.parametrize(
    "changes",
    [{"amount": 0}, {"amount": "10"}, {"currency": "us"}, {"currency": "u1d"}, {"source": ""}],
)
def test_invalid_charge_fields_are_422_invalid_request(simulator, order_id, changes):
    """A charge with a bad amount, currency or source answers 422 invalid_request."""
    payload = json.loads(charge_body(order_id)) | changes

    response = charge(simulator, order_id, body=json.dumps(payload).encode())

    assert response.status_code == 422
    assert error_code(response) == "invalid_request"


def test_post_and_delete_without_idempotency_key_are_400(simulator, order_id):
    """POST and DELETE without Idempotency-Key answer 400 idempotency_key_required."""
    post = reserve(simulator, order_id, headers=inventory_headers(key=None))
    delete = requests.delete(
        f"{simulator.inventory_url}/v1/reservations/{order_id}",
        headers=inventory_headers(key=None),
        timeout=HTTP_TIMEOUT_S,
    )

    for response in (post, delete):
        assert response.status_code == 400
        assert error_code(response) == "idempotency_key_required"


# --- idempotency ------------------------------------------------------------------


def test_same_key_same_body_replays_without_a_second_effect(simulator, order_id):
    """A repeat with the same key and bytes gets the first answer again, marked replayed."""
    key = new_key()
    first = reserve(simulator, order_id, key=key)

    again = reserve(simulator, order_id, key=key)

    assert again.status_code == first.status_code == 201
    assert again.json() == first.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert simulator.inventory.ledger(order_id)["reserved"] == 1


def test_same_key_with_another_body_is_422_key_reused(simulator, order_id):
    """The same key with different body bytes answers 422 idempotency_key_reused."""
    key = new_key()
    reserve(simulator, order_id, key=key)

    response = reserve(simulator, order_id, key=key, body=reservation_body(order_id, quantity=3))

    assert response.status_code == 422
    assert error_code(response) == "idempotency_key_reused"
    assert simulator.inventory.ledger(order_id)["reserved"] == 1


def test_same_key_while_the_first_runs_is_409_in_progress(simulator, order_id):
    """While the first request sleeps after its effect, a repeat answers 409 in progress."""
    key = new_key()
    simulator.inventory.script("slow", "reserve", [{"delay_ms": 1000}])
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        first = pool.submit(reserve, simulator, order_id, key=key, request_id="slow")
        wait_until(
            lambda: simulator.inventory.ledger(order_id)["reserved"] == 1, 5, "the reservation"
        )
        # The effect is already in the ledger while the first answer is still pending.
        assert not first.done()

        repeat = reserve(simulator, order_id, key=key, request_id="slow")

        assert repeat.status_code == 409
        assert error_code(repeat) == "idempotency_in_progress"
        assert first.result().status_code == 201
    assert reserve(simulator, order_id, key=key).headers["Idempotent-Replayed"] == "true"
    assert simulator.inventory.ledger(order_id)["reserved"] == 1


def test_a_client_that_times_out_still_finds_the_effect_and_its_answer(simulator, order_id):
    """A client hanging up during the latency cancels nothing: the effect and answer are kept."""
    key = new_key()
    simulator.payment.script("impatient", "charge", [{"delay_ms": 600}])

    with pytest.raises(requests.Timeout):
        requests.post(
            f"{simulator.payment_url}/v1/charges",
            data=charge_body(order_id),
            headers=payment_headers(key, "impatient"),
            auth=(PAYMENT_KEY, ""),
            timeout=0.2,
        )
    assert simulator.payment.ledger(order_id)["charged"] == 1  # acted before the sleep
    wait_until(lambda: charge(simulator, order_id, key=key).status_code != 409, 5, "the answer")

    retry = charge(simulator, order_id, key=key)
    assert retry.status_code == 201
    assert retry.headers["Idempotent-Replayed"] == "true"
    assert simulator.payment.ledger(order_id)["charged"] == 1


def test_keys_are_per_partner(simulator, order_id):
    """One key used at both partners is two separate operations, not a reuse."""
    key = new_key()

    assert reserve(simulator, order_id, key=key).status_code == 201
    assert charge(simulator, order_id, key=key).status_code == 201


# --- declines -----------------------------------------------------------------------


def test_out_of_stock_is_409_stored_and_replayed(simulator, order_id):
    """A sku starting with OOS is declined 409 out_of_stock, a definite answer kept for replay."""
    key, body = new_key(), reservation_body(order_id, sku="OOS-7")

    first = reserve(simulator, order_id, key=key, body=body)
    again = reserve(simulator, order_id, key=key, body=body)

    assert first.status_code == again.status_code == 409
    assert error_code(first) == "out_of_stock"
    assert again.json() == first.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert simulator.inventory.ledger(order_id)["reserved"] == 0


def test_declined_card_is_402_stored_and_replayed(simulator, order_id):
    """Source tok_chargeDeclined is declined 402 card_declined and replayed as such."""
    key, body = new_key(), charge_body(order_id, source="tok_chargeDeclined")

    first = charge(simulator, order_id, key=key, body=body)
    again = charge(simulator, order_id, key=key, body=body)

    assert first.status_code == again.status_code == 402
    assert error_code(first) == "card_declined"
    assert again.headers["Idempotent-Replayed"] == "true"
    assert simulator.payment.ledger(order_id)["charged"] == 0


def test_decline_rate_knob_declines_only_that_partner(simulator, order_id):
    """decline_rate=1 on payment declines every charge; inventory still reserves."""
    simulator.payment.configure(decline_rate=1.0)

    assert charge(simulator, order_id).status_code == 402
    assert reserve(simulator, order_id).status_code == 201


# --- rate limit -----------------------------------------------------------------------


def test_rate_limit_answers_429_with_retry_after_and_quota_headers(simulator, order_id):
    """Past the window's limit a partner answers 429 rate_limited with Retry-After."""
    simulator.inventory.configure(rate_limit={"limit": 3, "window": 30})

    allowed = [reserve(simulator, order_id) for _ in range(3)]
    refused = reserve(simulator, order_id)

    assert [r.status_code for r in allowed] == [201, 201, 201]
    assert [r.headers["X-RateLimit-Remaining"] for r in allowed] == ["2", "1", "0"]
    assert refused.status_code == 429
    assert error_code(refused) == "rate_limited"
    assert 1 <= int(refused.headers["Retry-After"]) <= 30
    assert refused.headers["X-RateLimit-Limit"] == "3"
    assert refused.headers["X-RateLimit-Remaining"] == "0"
    assert simulator.inventory.ledger(order_id)["reserved"] == 3
    assert charge(simulator, order_id).status_code == 201  # the payment quota is its own


# --- dropped connections and scripted faults ------------------------------------------


def test_drop_after_effect_acts_then_replays_to_the_retry(simulator, order_id):
    """A drop after the effect gives a connection error; the retry gets the stored success."""
    key = new_key()
    simulator.inventory.script("drop-1", "reserve", [{"drop": "after_effect"}])

    with pytest.raises(requests.ConnectionError):
        reserve(simulator, order_id, key=key, request_id="drop-1")
    assert simulator.inventory.ledger(order_id)["reserved"] == 1

    retry = reserve(simulator, order_id, key=key, request_id="drop-1")
    assert retry.status_code == 201
    assert retry.headers["Idempotent-Replayed"] == "true"
    assert simulator.inventory.ledger(order_id)["reserved"] == 1


def test_drop_before_effect_acts_not_and_the_retry_runs(simulator, order_id):
    """A drop before the effect leaves no effect and no stored answer: the retry acts."""
    key = new_key()
    simulator.inventory.script("drop-2", "reserve", [{"drop": "before_effect"}])

    with pytest.raises(requests.ConnectionError):
        reserve(simulator, order_id, key=key, request_id="drop-2")
    assert simulator.inventory.ledger(order_id)["reserved"] == 0

    retry = reserve(simulator, order_id, key=key, request_id="drop-2")
    assert retry.status_code == 201
    assert "Idempotent-Replayed" not in retry.headers


def test_drop_rate_knob_charges_then_drops(simulator, order_id):
    """drop_rate=1 charges, then closes the connection unanswered."""
    simulator.payment.configure(drop_rate=1.0)

    with pytest.raises(requests.ConnectionError):
        charge(simulator, order_id)

    assert simulator.payment.ledger(order_id)["charged"] == 1


def test_scripted_503_then_normal_success(simulator, order_id):
    """A scripted 503 answers before the effect, is not stored, and the retry succeeds."""
    key = new_key()
    simulator.payment.script("s-503", "charge", [{"status": 503, "retry_after": 2}])

    failed = charge(simulator, order_id, key=key, request_id="s-503")
    retry = charge(simulator, order_id, key=key, request_id="s-503")

    assert failed.status_code == 503
    assert error_code(failed) == "service_unavailable"
    assert failed.headers["Retry-After"] == "2"
    assert retry.status_code == 201
    assert "Idempotent-Replayed" not in retry.headers
    assert simulator.payment.ledger(order_id)["charged"] == 1


def test_scripted_500_after_effect_keeps_the_success_for_replay(simulator, order_id):
    """A 500 after the effect: the charge happened, and the retry replays the success."""
    key = new_key()
    simulator.payment.script("s-500", "charge", [{"status": 500, "after_effect": True}])

    failed = charge(simulator, order_id, key=key, request_id="s-500")
    retry = charge(simulator, order_id, key=key, request_id="s-500")

    assert failed.status_code == 500
    assert retry.status_code == 201
    assert retry.headers["Idempotent-Replayed"] == "true"
    assert simulator.payment.ledger(order_id)["charged"] == 1


def test_gateway_fault_answers_even_a_replay(simulator, order_id):
    """A gateway 503 sits in front of the idempotency store: a retry after an effect gets it."""
    key = new_key()
    simulator.payment.script(
        "s-gw", "charge", [{"status": 500, "after_effect": True}, {"status": 503, "gateway": True}]
    )

    first = charge(simulator, order_id, key=key, request_id="s-gw")
    behind_gateway = charge(simulator, order_id, key=key, request_id="s-gw")
    replay = charge(simulator, order_id, key=key, request_id="s-gw")

    assert (first.status_code, behind_gateway.status_code, replay.status_code) == (500, 503, 201)
    assert simulator.payment.ledger(order_id)["charged"] == 1


def test_script_only_matches_its_request_id_and_operation(simulator, order_id):
    """A script for one X-Request-ID and operation leaves other requests alone."""
    simulator.inventory.script("only-me", "release", [{"status": 502}])

    assert reserve(simulator, order_id, request_id="only-me").status_code == 201
    assert release(simulator, order_id, request_id="someone-else").status_code == 200
    assert release(simulator, order_id, request_id="only-me").status_code == 502
    assert release(simulator, order_id, request_id="only-me").status_code == 404  # script used up


def test_random_errors_answer_before_the_effect_and_are_not_stored(simulator, order_id):
    """error_rate=1 answers a transient error without acting; the retry then acts."""
    key = new_key()
    simulator.inventory.configure(error_rate=1.0)
    failed = reserve(simulator, order_id, key=key)
    simulator.inventory.configure(error_rate=0.0)

    retry = reserve(simulator, order_id, key=key)

    assert failed.status_code in RANDOM_ERROR_STATUSES
    if failed.status_code in (429, 503):
        assert failed.headers["Retry-After"] == "1"
    assert retry.status_code == 201
    assert "Idempotent-Replayed" not in retry.headers
    assert simulator.inventory.ledger(order_id)["reserved"] == 1


# --- compensations ---------------------------------------------------------------------


def test_release_is_404_when_nothing_stands_and_200_when_it_does(simulator, order_id):
    """DELETE /v1/reservations/{order_id}: 404 not_found without a reservation, else 200."""
    nothing = release(simulator, order_id)
    reserve(simulator, order_id)
    released = release(simulator, order_id)

    assert nothing.status_code == 404
    assert error_code(nothing) == "not_found"
    assert released.status_code == 200
    assert released.json() == {"order_id": order_id, "status": "released"}
    assert release(simulator, order_id).status_code == 404  # nothing stands any more


def test_refund_is_404_when_nothing_stands_and_201_when_it_does(simulator, order_id):
    """POST /v1/refunds: 404 not_found without a charge, else 201 with a re_ id."""
    nothing = refund(simulator, order_id)
    charge(simulator, order_id)
    refunded = refund(simulator, order_id)

    assert nothing.status_code == 404
    assert error_code(nothing) == "not_found"
    assert refunded.status_code == 201
    body = refunded.json()
    assert body["refund_id"].startswith("re_")
    assert body == {"refund_id": body["refund_id"], "order_id": order_id, "status": "refunded"}


# --- ledger and request log --------------------------------------------------------------


def test_ledger_shows_double_effects_and_standing_state(simulator, order_id):
    """Two reservations with two keys count twice; one release leaves one standing."""
    reserve(simulator, order_id)
    reserve(simulator, order_id)
    release(simulator, order_id)
    charge(simulator, order_id)
    refund(simulator, order_id)

    entry = simulator.inventory.ledger(order_id)

    assert {k: entry[k] for k in ("reserved", "released", "charged", "refunded")} == {
        "reserved": 2,
        "released": 1,
        "charged": 1,
        "refunded": 1,
    }
    assert entry["reservation_standing"] is True
    assert entry["charge_standing"] is False
    assert order_id in simulator.payment.ledger()["orders"]


def test_unknown_order_reads_as_zeros(simulator):
    """The ledger of an order never seen is all zeros, nothing standing."""
    entry = simulator.inventory.ledger("never-seen")

    assert entry["reserved"] == entry["charged"] == 0
    assert entry["reservation_standing"] is entry["charge_standing"] is False
    assert entry["requests"] == []


def test_request_log_filters_by_request_id_and_order_id(simulator, order_id):
    """The request log keeps method, path, key, status and replay flag, DELETE included."""
    key = new_key()
    reserve(simulator, order_id, key=key, request_id="corr-log")
    reserve(simulator, order_id, key=key, request_id="corr-log")
    release(simulator, order_id, request_id="corr-log")
    reserve(simulator, "other-order", request_id="corr-other")

    by_request = simulator.inventory.requests_log(request_id="corr-log")
    by_order = simulator.payment.requests_log(order_id=order_id)

    assert by_request == by_order
    assert [(r["method"], r["status"], r["replayed"], r["effect"]) for r in by_request] == [
        ("POST", 201, False, True),
        ("POST", 201, True, False),
        ("DELETE", 200, False, True),
    ]
    assert by_request[0]["idempotency_key"] == key
    assert by_request[2]["path"] == f"/v1/reservations/{order_id}"
    assert by_request[0]["received_monotonic"] <= by_request[1]["received_monotonic"]
    assert by_request[0]["received_wall"] > 0


# --- control API ------------------------------------------------------------------------


def test_config_is_per_partner_and_reset_restores_start_up_knobs(simulator):
    """POST /_sim/config changes one partner's knobs; reset brings back the start-up ones."""
    start_up = simulator.payment.config()

    changed = simulator.inventory.configure(latency_ms=[1, 2], error_rate=0.5)
    assert changed["latency_ms"] == [1, 2]
    assert changed["error_rate"] == 0.5
    assert simulator.payment.config() == start_up

    simulator.inventory.reset()
    assert simulator.inventory.config() == start_up


def test_invalid_config_is_refused(simulator):
    """A knob out of range answers 422 and changes nothing."""
    response = requests.post(
        f"{simulator.inventory_url}/_sim/config", json={"error_rate": 2}, timeout=HTTP_TIMEOUT_S
    )

    assert response.status_code == 422
    assert simulator.inventory.config()["error_rate"] == 0.0


# --- load and shutdown ----------------------------------------------------------------------


def test_two_hundred_concurrent_requests_are_all_answered(simulator, order_id):
    """200 requests in flight at once, each sleeping 300 ms, all succeed well within serial time."""
    simulator.inventory.configure(latency_ms=300)
    started = time.monotonic()

    with concurrent.futures.ThreadPoolExecutor(max_workers=200) as pool:
        statuses = list(pool.map(lambda _: reserve(simulator, order_id).status_code, range(200)))

    assert statuses == [201] * 200
    assert time.monotonic() - started < 10  # one at a time would take 60 s
    assert simulator.inventory.ledger(order_id)["reserved"] == 200


def test_sigterm_stops_the_simulator_cleanly(tmp_path):
    """SIGTERM stops both servers and the process exits 0."""
    running = start_simulator(tmp_path / "simulator.log")

    assert stop_simulator(running) == 0
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{running.inventory_url}/_sim/health", timeout=HTTP_TIMEOUT_S)


def test_a_stack_hands_the_simulators_credentials_that_look_like_options(tmp_path):
    """A generated credential may begin with "-" (token_urlsafe's alphabet has it): the
    simulators must still receive it whole, not refuse to start (seen as a demo that
    failed one run in a few dozen)."""
    stack = Stack(
        base_dir=tmp_path,
        log_dir=tmp_path,
        inventory_token="-starts-like-an-option",
        payment_key="--looks-like-a-flag",
        ports={"inventory": 8101, "payment": 8102},
    )
    parser = argparse.ArgumentParser()
    add_simulator_arguments(parser)

    options = parser.parse_args(stack.simulator_arguments())

    assert options.inventory_token == "-starts-like-an-option"
    assert options.payment_key == "--looks-like-a-flag"
