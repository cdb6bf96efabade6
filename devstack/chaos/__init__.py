"""The chaos run (`manage.py chaos`): the real stack under fire, then a verdict.

It starts the whole stack as real processes on the README's production layout (its own
PostgreSQL and Redis, neither of which it spares, the partner simulators with random
errors, dropped connections and latency, gunicorn, one Celery worker per queue and
beat), places orders through the HTTP API while a fault schedule SIGKILLs the workers,
restarts Redis (losing every queued message), crashes PostgreSQL and takes each partner
down long enough to open its breaker, waits for every order to settle, and checks the
simulators' ledger (nothing doubled, nothing half-done, nothing for an order never
accepted), the clients' answers (no 500) and how soon each fault's orders settled.

    postgres.py  a PostgreSQL server of the run's own (initdb, pg_ctl stop -m immediate)
    database.py  a fresh database of the run's own, and this process switched to it
    broker.py    a RabbitMQ virtual host of the run's own (--broker rabbitmq)
    stack.py     the demo's Stack on the production layout, with the faults' handles
    faults.py    the schedule of kills, restarts, the crash and the outages; its runner
    recovery.py  which orders each fault caught, and how soon they settled
    traffic.py   the client: every call retried with the same Idempotency-Key
    run.py       placing, faults and settling in one bounded loop
    verdict.py   the facts (records, ledger, answers) and the checks: PASS or FAIL
    report.py    the printed report
"""
