"""``manage.py bench``: how long an order takes, and how many settle a second.

The demo's stack (`devstack.demo`) with fixed, fault-free partner latencies, so the
figures can be read against the promise: an order takes the slower of its two calls,
not their sum, and more workers settle more orders a second.

* `stack.py`: the demo's `Stack`, fault-free, with its own database and worker size;
* `traffic.py`: the client side, one order at a time or many at once, timed;
* `figures.py`: percentiles, where an order's time goes, the tables and the verdict.
"""
