"""``manage.py bench``: dualsend against a bare Celery chord and the sequential calls.

* `layout.py`: the README's worker command lines, the one place the bench builds them;
* `stack.py`: the chaos run's stack (own Redis and PostgreSQL, production layout) with
  fault-free partners of constant latency, and the bare chord's workers beside it;
* `bare_chord.py`: the bare Celery chord, the yardstick (its workers import only it);
* `systems.py`: the three systems, each driven one order at a time and in a burst
  (dualsend's also through its batch intake);
* `load.py`: one at a time, and a steady open-loop rate;
* `measure.py`: CPU by process kind, peak memory, database connections;
* `run.py`: the phases in order, each one measured; the records counted;
* `results.py`: what was measured, the arithmetic, the targets;
* `table.py`, `figures.py`: the printed tables (figures: where dualsend's time goes);
* `traffic.py`: dualsend's HTTP client, one timed round trip per order, and batches.
"""
