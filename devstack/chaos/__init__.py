"""The chaos run (`manage.py chaos`): the real stack under fire, then a verdict.

It starts the whole stack as real processes (its own Redis without persistence, the
partner simulators with random errors, dropped connections and latency, a Celery
worker, beat and the web server), places orders through the HTTP API while a fault
schedule SIGKILLs the worker, restarts Redis (losing every queued message) and takes one
partner down long enough to open its breaker, waits for every order to settle, and
checks the simulators' ledger: nothing doubled, nothing half-done.

    database.py  a fresh database of the run's own, and this process switched to it
    broker.py    a RabbitMQ virtual host of the run's own (--broker rabbitmq)
    stack.py     the demo's Stack, with its own redis-server and the faults' handles
    faults.py    the schedule of kills, restarts and the outage, and its runner
    traffic.py   the client: POST /api/orders, retried with the same Idempotency-Key
    run.py       placing, faults and settling in one bounded loop
    verdict.py   the facts (records and ledger) and the checks that make PASS or FAIL
    report.py    the printed report
"""
