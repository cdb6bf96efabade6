"""The sweeper's rules, called directly (no worker; publishing recorded, not sent)."""

import datetime
import time
import uuid

import pytest
from celery.canvas import Signature
from django.conf import settings
from django.utils import timezone

from dualsend_app import enqueue, recovery
from dualsend_app.models import Order, Redrive, Send
from tests.factories import create_order, stranded_order

Op = Send.Operation
GRACE = datetime.timedelta(seconds=settings.DUALSEND_SWEEP_GRACE_SECONDS)


@pytest.fixture
def published(monkeypatch):
    """What the sweeper would have put on the broker."""
    sent = []
    monkeypatch.setattr(recovery.enqueue, "enqueue_send", lambda s: sent.append(s.pk) or True)
    monkeypatch.setattr(recovery.enqueue, "enqueue_settle", lambda oid: sent.append(oid) or True)
    monkeypatch.setattr(recovery.enqueue, "dispatch_order", lambda oid: sent.append(oid) or True)
    # Nothing waits in the queues unless a test says so (the tests below read real ones).
    monkeypatch.setattr(recovery, "busy_queues", frozenset)
    return sent


@pytest.mark.django_db
def test_lost_work_is_redriven_once_per_grace_period(published):
    """A re-driven message waiting in a busy queue is not sent again on the next sweep."""
    order = stranded_order(
        status=Order.Status.DISPATCHED,
        **{
            Op.INVENTORY_RESERVE: (Send.Status.PENDING, False),
            Op.PAYMENT_CHARGE: (Send.Status.PENDING, False),
        },
    )

    first = recovery.sweep()
    again = recovery.sweep()
    after_grace = recovery.sweep(now=timezone.now() + GRACE + datetime.timedelta(seconds=1))

    assert first["send"] == 2
    assert again["send"] == 0
    assert after_grace["send"] == 2
    assert Redrive.objects.filter(order=order, kind=Redrive.Kind.SEND).count() == 4
    order.refresh_from_db()
    assert order.redrive_count == 4


@pytest.mark.django_db
def test_overdue_work_in_a_queue_with_messages_waiting_is_left_until_it_drains(
    published, monkeypatch
):
    """A burst longer than the grace: the charge's queue and settle's still hold messages,
    so the overdue charge and a callback not seen yet may be in them, behind the others.
    Sending them again would only add duplicates to the late queues: they are re-driven
    once those queues have drained, the reserve (its queue empty) at once."""
    pending, succeeded = (Send.Status.PENDING, False), (Send.Status.SUCCEEDED, True)
    charging = stranded_order(
        status=Order.Status.DISPATCHED,
        **{Op.INVENTORY_RESERVE: succeeded, Op.PAYMENT_CHARGE: pending},
    )
    reserving = stranded_order(
        status=Order.Status.DISPATCHED,
        **{Op.INVENTORY_RESERVE: pending, Op.PAYMENT_CHARGE: succeeded},
    )
    settled_late = stranded_order(
        status=Order.Status.DISPATCHED,
        **{Op.INVENTORY_RESERVE: succeeded, Op.PAYMENT_CHARGE: succeeded},
    )
    charge = charging.sends.get(operation=Op.PAYMENT_CHARGE)
    reserve = reserving.sends.get(operation=Op.INVENTORY_RESERVE)
    monkeypatch.setattr(
        recovery, "busy_queues", lambda: frozenset({"api.payment", settings.QUEUE_DEFAULT})
    )

    during = recovery.sweep()

    assert (during["send"], during["settle"]) == (1, 0)
    assert published == [reserve.pk]
    monkeypatch.setattr(recovery, "busy_queues", frozenset)
    drained = recovery.sweep()
    assert (drained["send"], drained["settle"]) == (1, 1)
    assert published == [reserve.pk, charge.pk, settled_late.pk]


def test_busy_queues_are_those_of_the_broker_with_messages_waiting(settings):
    """Read from the broker itself: kombu's lists in Redis (under a key prefix of this
    test's own, which no worker consumes)."""
    import redis

    from tests import environment

    prefix = f"test-busy-{uuid.uuid4().hex[:12]}:"
    settings.CELERY_BROKER_URL = environment.REDIS_URL
    settings.CELERY_BROKER_TRANSPORT_OPTIONS = {
        **settings.CELERY_BROKER_TRANSPORT_OPTIONS,
        "global_keyprefix": prefix,
    }
    client = redis.Redis.from_url(environment.REDIS_URL)
    try:
        assert recovery.busy_queues() == frozenset()
        client.lpush(f"{prefix}api.payment", "a message")
        assert recovery.busy_queues() == {"api.payment"}
    finally:
        client.delete(f"{prefix}api.payment")
        client.close()


def test_a_broker_that_cannot_say_makes_no_queue_busy(settings):
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/0"  # nothing listens there

    assert recovery.busy_queues() == frozenset()


@pytest.mark.django_db
def test_work_on_time_is_left_alone(published):
    """A send created a moment ago, or due in the future, is not lost."""
    stranded_order(
        status=Order.Status.DISPATCHED,
        age_seconds=0,
        **{
            Op.INVENTORY_RESERVE: (Send.Status.PENDING, False),
            Op.PAYMENT_CHARGE: (Send.Status.IN_FLIGHT, False),
        },
    )

    assert not any(recovery.sweep().values())
    assert published == []


@pytest.mark.django_db
def test_an_order_never_dispatched_is_dispatched_once_per_grace(published):
    """Broker down at commit: the pending order is dispatched again, once per grace."""
    order = stranded_order(
        status=Order.Status.PENDING,
        **{
            Op.INVENTORY_RESERVE: (Send.Status.PENDING, False),
            Op.PAYMENT_CHARGE: (Send.Status.PENDING, False),
        },
    )

    assert recovery.sweep()["dispatch"] == 1
    assert recovery.sweep()["dispatch"] == 0
    assert published.count(order.pk) == 1


@pytest.mark.django_db
def test_an_order_dispatched_by_its_batch_during_the_sweep_is_not_dispatched_again(
    published, monkeypatch
):
    """The sweep reads its list once; while it dispatches the first order, the batch that
    created them reaches the second: the sweep leaves that one alone."""
    pending = {Op.INVENTORY_RESERVE: (Send.Status.PENDING, False)}
    orders = [stranded_order(status=Order.Status.PENDING, **pending) for _ in range(2)]
    sweeper_published = []

    def dispatch_while_the_batch_goes_on(order_id):
        sweeper_published.append(order_id)
        Order.objects.exclude(pk=order_id).filter(pk__in=[o.pk for o in orders]).update(
            status=Order.Status.DISPATCHED  # the batch request's own dispatch
        )
        return True

    monkeypatch.setattr(recovery.enqueue, "dispatch_order", dispatch_while_the_batch_goes_on)

    assert recovery.sweep()["dispatch"] == 1
    assert len(sweeper_published) == 1
    assert Redrive.objects.filter(kind=Redrive.Kind.DISPATCH).count() == 1


@pytest.mark.django_db
def test_sweeps_do_not_overlap(published):
    """While one sweep holds the lock (shared by all workers), another returns at once."""
    from dualsend_app.resilience.redis_client import get_redis, key_prefix
    from tasks.sweeper import sweep

    held = get_redis().lock(f"{key_prefix()}:sweeper", timeout=10)
    assert held.acquire(blocking=False)
    try:
        assert sweep.run() is None
    finally:
        held.release()
    assert sweep.run() == dict.fromkeys(("expired", "dispatch", "send", "settle", "finish"), 0)


RULES = ("expired", "dispatch", "send", "settle", "finish")


@pytest.mark.django_db
def test_a_sweep_killed_with_its_worker_holds_up_the_next_ones_briefly(published, settings):
    """Its lock, never released, lapses after two sweep intervals (it took 60 s)."""
    from tasks import sweeper

    settings.DUALSEND_SWEEP_EVERY_SECONDS = 0.5  # a lock of 1 s
    assert sweeper._sweep_lock()  # taken by a sweep whose worker was then killed
    assert sweeper.sweep.run() is None

    time.sleep(sweeper.lock_seconds() + 0.2)

    assert sweeper.sweep.run() == dict.fromkeys(RULES, 0)


@pytest.mark.django_db
def test_a_sweep_whose_lock_lapsed_leaves_the_rest_to_the_newer_one(published, monkeypatch):
    """Its first rule outlasts the lock and a newer sweep takes it: this one stops."""
    from dualsend_app.resilience.redis_client import get_redis, key_prefix
    from tasks import sweeper

    lock_name = f"{key_prefix()}:sweeper"
    ran = []

    def slow_first_rule(now):
        ran.append("expired")
        get_redis().delete(lock_name)  # the lock lapsed...
        assert sweeper._sweep_lock()  # ...and the next beat's sweep holds it
        return 0

    monkeypatch.setattr(recovery, "expire_old_orders", slow_first_rule)
    monkeypatch.setattr(
        recovery, "redispatch_undispatched_orders", lambda before: ran.append("dispatch") or 0
    )
    try:
        assert sweeper.sweep.run() == dict.fromkeys(RULES, 0)
    finally:
        get_redis().delete(lock_name)

    assert ran == ["expired"]


def test_a_header_send_redriven_alone_goes_out_alone(db, monkeypatch):
    """A re-driven header send is published on its own, with nothing linked: it settles
    its order itself once it is final, as when the order was dispatched."""
    published = []
    monkeypatch.setattr(Signature, "apply_async", lambda task, *a, **k: published.append(task))
    order = create_order(status=Order.Status.DISPATCHED)
    reserve = order.sends.get(operation=Send.Operation.INVENTORY_RESERVE)

    assert enqueue.enqueue_send(reserve)

    (task,) = published
    assert (task.task, task.args) == ("tasks.sends.send_inventory", (reserve.pk,))
    assert not task.options.get("link")
