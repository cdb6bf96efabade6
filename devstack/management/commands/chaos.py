"""``manage.py chaos``: the whole stack under fire, then PASS or FAIL from the ledger.

It recreates a database of its own, starts its own Redis (no persistence), the partner
simulators (random errors, dropped connections, latency), a Celery worker, beat and the
web server as real processes, and places orders through the HTTP API while it SIGKILLs
the worker, restarts Redis and takes one partner down. Then it waits for every order to
settle, prints a report (see devstack/chaos/) and exits 0 on PASS, 1 on FAIL. It
stops every process it started and deletes its RabbitMQ vhost, also on Ctrl-C or an
error; the project's own Redis and database are never touched. Everything is bounded.

    DJANGO_DEBUG=1 .venv/bin/python manage.py chaos                    # 300 orders, Redis
    DJANGO_DEBUG=1 .venv/bin/python manage.py chaos --broker rabbitmq
"""

import contextlib
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
from devstack.chaos.run import ChaosOptions, ChaosRun, RunSetup, new_log_dir, start_stack
from devstack.chaos.stack import BREAKER_OPEN_SECONDS, ChaosStack
from devstack.chaos.verdict import RunFacts
from devstack.stack.console import stopped_line
from devstack.stack.processes import StartupError, signals_ignored, sigterm_as_ctrl_c

EXIT_FAIL = 1
EXIT_INTERRUPTED = 130


class Command(BaseCommand):
    help = (
        "Run the real stack under faults (worker SIGKILLs, a Redis restart without "
        "persistence, a partner outage), place orders through the HTTP API, and check "
        "that nothing was lost or done twice. Exit 0 on PASS, 1 on FAIL."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--orders", type=int, default=300, help="orders to place (300)")
        parser.add_argument(
            "--broker", choices=(broker.REDIS, broker.RABBITMQ), default=broker.REDIS,
            help="redis: the run's own Redis; rabbitmq: a vhost of its own on 127.0.0.1:5672",
        )  # fmt: skip
        parser.add_argument("--kills", type=int, default=3, help="worker SIGKILLs (3)")
        parser.add_argument(
            "--redis-restarts", type=int, default=1, help="Redis restarts, data lost (1)"
        )
        parser.add_argument(
            "--outage-seconds", type=float, default=10.0,
            help="one partner fails every call this long; more than its breaker's open "
            f"time ({BREAKER_OPEN_SECONDS:g} s) (10)",
        )  # fmt: skip
        parser.add_argument(
            "--outage-partner", choices=PARTNERS, default=None,
            help="the partner that goes down (default: chosen by the seed)",
        )  # fmt: skip
        parser.add_argument(
            "--timeout", type=float, default=420.0,
            help="seconds, from the first order, for every order to be final (420)",
        )  # fmt: skip
        parser.add_argument("--seed", type=int, default=None, help="repeat a run's choices")
        parser.add_argument(
            "--database-url", default=None,
            help="a database the run may drop and recreate (default: <DATABASE_URL's "
            "name>_chaos on PostgreSQL, else var/chaos/dualsend-chaos.sqlite3)",
        )  # fmt: skip
        parser.add_argument(
            "--rate", type=float, default=None,
            help="orders per second (default: spread over the fault schedule)",
        )  # fmt: skip
        parser.add_argument("--concurrency", type=int, default=4, help="client threads (4)")
        parser.add_argument(
            "--fault-gap", type=float, default=8.0,
            help="seconds between one fault's end and the next one's start, jittered (8)",
        )  # fmt: skip

    def handle(self, *args: Any, **options: Any) -> None:
        run_options = _run_options(options)
        # Celery prefers this variable to the broker an app is given: the run's own
        # readiness pings must reach the run's own broker, not the project's.
        os.environ.pop("CELERY_BROKER_URL", None)
        sigterm_as_ctrl_c()
        started = time.monotonic()
        vhost = broker.RabbitVhost() if run_options.broker == broker.RABBITMQ else None
        stack = None
        try:
            url = self._prepare_database(options["database_url"])
            if vhost is not None:
                vhost.create()
                self.say(f"created RabbitMQ vhost {vhost.name}")
            stack = self._stack(url, vhost, run_options)
            start_stack(stack, self.say)
            run = ChaosRun(run_options, stack, self.say)
            facts, verdict = run.execute()
            setup = _setup(stack, url, vhost, run, facts)
        except KeyboardInterrupt:
            self.say("interrupted")
            raise SystemExit(EXIT_INTERRUPTED) from None
        except (StartupError, database.DatabaseError, broker.BrokerError) as exc:
            raise CommandError(str(exc)) from exc
        finally:
            self._clean_up(stack, vhost)
        self.stdout.write("\n" + report.render(setup, facts, verdict))
        self.say(f"wall time {time.monotonic() - started:.0f} s")
        if not verdict.passed:
            sys.exit(EXIT_FAIL)

    def say(self, line: str) -> None:
        self.stdout.write(line)
        self.stdout.flush()

    def _prepare_database(self, explicit: str | None) -> str:
        url = database.chaos_database_url(explicit)
        database.recreate(url)
        database.use(url)
        self.say(f"database {database.describe(url)} recreated and migrated")
        return url

    @staticmethod
    def _stack(url: str, vhost: broker.RabbitVhost | None, run_options: ChaosOptions) -> ChaosStack:
        return ChaosStack(
            base_dir=settings.BASE_DIR,
            log_dir=new_log_dir(settings.BASE_DIR),
            database_url=url,
            amqp_url=vhost.url if vhost else "",
            seed=run_options.seed,
        )

    def _clean_up(self, stack: ChaosStack | None, vhost: broker.RabbitVhost | None) -> None:
        """Stop every process, delete the vhost; a second Ctrl-C cannot cut this short."""
        with signals_ignored():
            if stack is not None:
                self.say(stopped_line(stack.stop(), started_by="the run"))
            if vhost is not None:
                with contextlib.suppress(broker.BrokerError):
                    vhost.delete()
                    self.say(f"deleted RabbitMQ vhost {vhost.name}")
            database.close()


def _run_options(options: dict[str, Any]) -> ChaosOptions:
    if options["orders"] < 1 or options["concurrency"] < 1:
        raise CommandError("--orders and --concurrency must be at least 1")
    if options["kills"] < 0 or options["redis_restarts"] < 0:
        raise CommandError("--kills and --redis-restarts must not be negative")
    if options["outage_seconds"] and options["outage_seconds"] <= BREAKER_OPEN_SECONDS:
        raise CommandError(
            f"--outage-seconds must exceed the breaker's open time ({BREAKER_OPEN_SECONDS:g} s)"
            " so that the outage outlasts it, or be 0 for no outage"
        )
    if options["timeout"] <= 0 or (options["rate"] is not None and options["rate"] <= 0):
        raise CommandError("--timeout and --rate must be more than 0")
    seed = options["seed"] if options["seed"] is not None else random.randrange(10**6)
    partner = options["outage_partner"] or random.Random(seed).choice(PARTNERS)
    return ChaosOptions(
        orders=options["orders"],
        broker=options["broker"],
        kills=options["kills"],
        redis_restarts=options["redis_restarts"],
        outage_seconds=options["outage_seconds"],
        outage_partner=partner,
        timeout=options["timeout"],
        seed=seed,
        rate=options["rate"],
        concurrency=options["concurrency"],
        fault_gap=max(0.0, options["fault_gap"]),
    )


def _setup(
    stack: ChaosStack,
    url: str,
    vhost: broker.RabbitVhost | None,
    run: ChaosRun,
    facts: RunFacts,
) -> RunSetup:
    redis_role = "results, breaker and rate-limit state" + ("" if vhost else ", and the broker")
    return RunSetup(
        command=" ".join(["manage.py", *sys.argv[1:]]),
        broker=vhost.url_for_display if vhost else f"redis (its own) {stack.redis_url}",
        redis=f"own redis-server on port {stack.redis_port}, no persistence: {redis_role}",
        database=database.describe(url),
        orders=len(facts.orders),
        web_url=stack.web_url,
        rate=run.rate,
        concurrency=run.options.concurrency,
        seed=run.options.seed,
        faults=stack.faults,
        log_dir=stack.log_dir,
    )
