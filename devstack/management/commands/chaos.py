"""``manage.py chaos``: the whole stack under fire, then PASS or FAIL from the ledger.

It makes a PostgreSQL server of its own (initdb, a free port on 127.0.0.1) unless given a
database, starts its own Redis (no persistence), the partner simulators (random errors,
dropped connections, latency), the README's production layout (gunicorn gthread, one
thread-pool Celery worker per queue, beat) as real processes, and places orders through
the HTTP API while it SIGKILLs the workers, restarts Redis, crashes PostgreSQL and takes
each partner down in turn. Then it waits for every order to settle, prints a report (see
devstack/chaos/) and exits 0 on PASS, 1 on FAIL. It stops every process it started,
deletes its PostgreSQL data directory and its RabbitMQ vhost, also on Ctrl-C or an error;
the project's own Redis and database are never touched. Everything is bounded.

    DJANGO_DEBUG=1 .venv/bin/python manage.py chaos                    # 1,000 orders, Redis
    DJANGO_DEBUG=1 .venv/bin/python manage.py chaos --broker rabbitmq
    DJANGO_DEBUG=1 .venv/bin/python manage.py chaos --orders 300       # quicker
"""

import contextlib
import logging
import os
import random
import sys
import time
from argparse import ArgumentParser
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from devstack.chaos import broker, database, report
from devstack.chaos.faults import PARTNERS
from devstack.chaos.postgres import PostgresError, PrivatePostgres
from devstack.chaos.run import ChaosOptions, ChaosRun, RunSetup, levers, new_log_dir, start_stack
from devstack.chaos.stack import BREAKER_OPEN_SECONDS, ChaosStack
from devstack.chaos.verdict import RunFacts
from devstack.stack.console import stopped_line
from devstack.stack.processes import (
    PROJECT_VARIABLE_PREFIXES,
    StartupError,
    signals_ignored,
    sigterm_as_ctrl_c,
)

EXIT_FAIL = 1
EXIT_INTERRUPTED = 130
PRIVATE_DATABASE = "dualsend_chaos"
OUTAGES = {"both": PARTNERS, "none": (), **{partner: (partner,) for partner in PARTNERS}}


class Command(BaseCommand):
    help = (
        "Run the real stack (production layout) under faults: worker SIGKILLs, Redis "
        "restarts without persistence, a PostgreSQL crash, an outage of each partner. Place "
        "orders through the HTTP API and check that nothing was lost, stuck or done twice, "
        "and that each fault's orders settled soon after it. Exit 0 on PASS, 1 on FAIL."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--orders", type=int, default=1000, help="orders to place (1000)")
        parser.add_argument(
            "--broker", choices=(broker.REDIS, broker.RABBITMQ), default=broker.REDIS,
            help="redis: the run's own Redis; rabbitmq: a vhost of its own on 127.0.0.1:5672",
        )  # fmt: skip
        parser.add_argument(
            "--kills", type=int, default=5,
            help="worker SIGKILLs, taking the per-queue workers in turn (5)",
        )  # fmt: skip
        parser.add_argument(
            "--redis-restarts", type=int, default=2, help="Redis restarts, data lost (2)"
        )
        parser.add_argument(
            "--postgres-crashes", type=int, default=1,
            help="crashes of the run's own PostgreSQL, pg_ctl stop -m immediate (1)",
        )  # fmt: skip
        parser.add_argument(
            "--postgres-down-seconds", type=float, default=5.0,
            help="how long PostgreSQL stays down after each crash (5)",
        )  # fmt: skip
        parser.add_argument(
            "--outages", choices=tuple(OUTAGES), default="both",
            help="which partners go down, one after the other (both)",
        )  # fmt: skip
        parser.add_argument(
            "--outage-seconds", type=float, default=10.0,
            help="each outage fails every call this long; more than the breaker's open "
            f"time ({BREAKER_OPEN_SECONDS:g} s) (10)",
        )  # fmt: skip
        parser.add_argument(
            "--timeout", type=float, default=900.0,
            help="seconds, from the first order, for every fault and every order to be "
            "final; the run stops there (900)",
        )  # fmt: skip
        parser.add_argument(
            "--recovery-bound", type=float, default=30.0,
            help="seconds from a fault to the last order it caught settling (30)",
        )  # fmt: skip
        parser.add_argument("--seed", type=int, default=None, help="repeat a run's choices")
        parser.add_argument(
            "--database-url", default=None,
            help="a database the run may drop and recreate, instead of a PostgreSQL server "
            "of its own (then --postgres-crashes 0: the run cannot crash a server it does "
            "not own)",
        )  # fmt: skip
        parser.add_argument(
            "--rate", type=float, default=None,
            help="orders per second (default: spread over the fault schedule)",
        )  # fmt: skip
        parser.add_argument("--concurrency", type=int, default=8, help="client threads (8)")
        parser.add_argument(
            "--fault-gap", type=float, default=8.0,
            help="seconds at least from one fault's end to the next one's start, jittered; "
            "the next also waits for the orders the previous one caught to settle (8)",
        )  # fmt: skip
        parser.add_argument(
            "--setting", action="append", default=[], metavar="NAME=VALUE",
            help="a setting for every process of the stack, e.g. "
            "DUALSEND_SWEEP_GRACE_SECONDS=10 (repeatable; default: the product's own)",
        )  # fmt: skip

    def handle(self, *args: Any, **options: Any) -> None:
        run_options = _run_options(options)
        overrides = _settings(options["setting"])
        # Celery prefers this variable to the broker an app is given: the run's own
        # readiness pings must reach the run's own broker, not the project's.
        os.environ.pop("CELERY_BROKER_URL", None)
        # The run crashes its database on purpose: the pool's reconnection warnings in this
        # process say nothing the run does not already know.
        logging.getLogger("psycopg.pool").setLevel(logging.ERROR)
        sigterm_as_ctrl_c()
        started = time.monotonic()
        vhost = broker.RabbitVhost() if run_options.broker == broker.RABBITMQ else None
        stack = None
        try:
            stack = self._stack(vhost, run_options, overrides)
            url = self._prepare_database(stack, options["database_url"])
            if vhost is not None:
                vhost.create()
                self.say(f"created RabbitMQ vhost {vhost.name}")
            start_stack(stack, self.say)
            run = ChaosRun(run_options, stack, self.say)
            lever_text = levers(stack.child_environment())
            self.say(f"recovery levers: {lever_text}")
            facts, verdict = run.execute()
            setup = _setup(stack, url, vhost, run, facts, lever_text)
        except KeyboardInterrupt:
            self.say("interrupted")
            raise SystemExit(EXIT_INTERRUPTED) from None
        except (StartupError, database.DatabaseError, broker.BrokerError, PostgresError) as exc:
            raise CommandError(str(exc)) from exc
        finally:
            self._clean_up(stack, vhost)
        text = report.render(setup, facts, verdict)
        (setup.log_dir / "report.txt").write_text(text)
        self.stdout.write("\n" + text)
        self.say(f"wall time {time.monotonic() - started:.0f} s")
        if not verdict.passed:
            sys.exit(EXIT_FAIL)

    def say(self, line: str) -> None:
        self.stdout.write(line)
        self.stdout.flush()

    def _prepare_database(self, stack: ChaosStack, explicit: str | None) -> str:
        """The given database, or a PostgreSQL server of the run's own; recreated, migrated."""
        if explicit:
            url = explicit
        else:
            began = time.monotonic()
            stack.postgres = PrivatePostgres.create()
            stack.start_postgres()
            url = stack.postgres.url(PRIVATE_DATABASE)
            self.say(
                f"started own PostgreSQL {stack.postgres.version} on port {stack.postgres.port} "
                f"in {time.monotonic() - began:4.1f} s (data in {stack.postgres.root})"
            )
        stack.database_url = url
        database.recreate(url)
        database.use(url)
        self.say(f"database {database.describe(url)} recreated and migrated")
        return url

    @staticmethod
    def _stack(
        vhost: broker.RabbitVhost | None, run_options: ChaosOptions, overrides: dict[str, str]
    ) -> ChaosStack:
        return ChaosStack(
            base_dir=settings.BASE_DIR,
            log_dir=new_log_dir(settings.BASE_DIR),
            amqp_url=vhost.url if vhost else "",
            seed=run_options.seed,
            settings=overrides,
        )

    def _clean_up(self, stack: ChaosStack | None, vhost: broker.RabbitVhost | None) -> None:
        """Stop every process, delete the PostgreSQL data and the vhost; a second Ctrl-C
        cannot cut this short."""
        with signals_ignored():
            database.close()
            if stack is not None:
                self.say(stopped_line(stack.stop(), started_by="the run"))
                if stack.postgres is not None:
                    stack.postgres.remove()
                    self.say(f"removed PostgreSQL data directory {stack.postgres.root}")
            if vhost is not None:
                with contextlib.suppress(broker.BrokerError):
                    vhost.delete()
                    self.say(f"deleted RabbitMQ vhost {vhost.name}")


def _run_options(options: dict[str, Any]) -> ChaosOptions:
    if options["orders"] < 1 or options["concurrency"] < 1:
        raise CommandError("--orders and --concurrency must be at least 1")
    counts = ("kills", "redis_restarts", "postgres_crashes")
    if any(options[name] < 0 for name in counts):
        raise CommandError("--kills, --redis-restarts and --postgres-crashes must not be negative")
    if options["database_url"] and options["postgres_crashes"]:
        raise CommandError(
            "--database-url names a database on a server the run does not own: add "
            "--postgres-crashes 0, or leave --database-url out for a server of its own"
        )
    outages = OUTAGES[options["outages"]]
    if outages and options["outage_seconds"] <= BREAKER_OPEN_SECONDS:
        raise CommandError(
            f"--outage-seconds must exceed the breaker's open time ({BREAKER_OPEN_SECONDS:g} s)"
            " so that the outage outlasts it (or --outages none)"
        )
    positive = ("timeout", "recovery_bound", "postgres_down_seconds")
    if any(options[name] <= 0 for name in positive) or (
        options["rate"] is not None and options["rate"] <= 0
    ):
        raise CommandError(
            "--timeout, --recovery-bound, --postgres-down-seconds and --rate must be more than 0"
        )
    seed = options["seed"] if options["seed"] is not None else random.randrange(10**6)
    return ChaosOptions(
        orders=options["orders"],
        broker=options["broker"],
        kills=options["kills"],
        redis_restarts=options["redis_restarts"],
        postgres_crashes=options["postgres_crashes"],
        postgres_down_seconds=options["postgres_down_seconds"],
        outage_partners=outages,
        outage_seconds=options["outage_seconds"],
        timeout=options["timeout"],
        recovery_bound=options["recovery_bound"],
        seed=seed,
        rate=options["rate"],
        concurrency=options["concurrency"],
        fault_gap=max(0.0, options["fault_gap"]),
    )


def _settings(pairs: list[str]) -> dict[str, str]:
    """--setting NAME=VALUE, each NAME one project/settings.py reads (a typo is refused)."""
    overrides = {}
    for pair in pairs:
        name, equals, value = pair.partition("=")
        if not equals or not name.startswith(PROJECT_VARIABLE_PREFIXES):
            raise CommandError(
                f"--setting {pair!r}: expected NAME=VALUE with NAME a dualsend setting "
                f"({', '.join(PROJECT_VARIABLE_PREFIXES)}…)"
            )
        overrides[name] = value
    return overrides


def _setup(
    stack: ChaosStack,
    url: str,
    vhost: broker.RabbitVhost | None,
    run: ChaosRun,
    facts: RunFacts,
    lever_text: str,
) -> RunSetup:
    redis_role = "results, breaker and rate-limit state" + ("" if vhost else ", and the broker")
    if stack.postgres is not None:
        where = (
            f"own PostgreSQL {stack.postgres.version} server (initdb), 127.0.0.1:"
            f"{stack.postgres.port}, database {PRIVATE_DATABASE}"
        )
    else:
        where = f"{database.describe(url)} (given; not crashed)"
    workers = ", ".join(f"{w.role} (-Q {w.queue}, {w.concurrency} threads)" for w in stack.workers)
    overrides = " ".join(f"{name}={value}" for name, value in stack.settings.items())
    return RunSetup(
        command=" ".join(["manage.py", *sys.argv[1:]]),
        broker=vhost.url_for_display if vhost else f"redis (its own) {stack.redis_url}",
        redis=f"own redis-server on port {stack.redis_port}, no persistence: {redis_role}",
        database=where,
        layout=f"gunicorn gthread {stack.web_threads} threads; workers {workers}; beat",
        levers=lever_text + (f"; --setting {overrides}" if overrides else ""),
        orders=len(facts.orders),
        web_url=stack.web_url,
        rate=run.placer.average_rate(),
        concurrency=run.options.concurrency,
        seed=run.options.seed,
        faults=stack.faults,
        log_dir=stack.log_dir,
    )
