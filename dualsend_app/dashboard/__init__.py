"""The live dashboard for staff at /dashboard/: orders by status over the last hour, each
partner operation's success rate and latency percentiles, the breakers, the latest failed
calls and the orders that need attention.

`stats.py` asks the database for every number, `chart.py` draws the first view's chart,
`views.py` serves the page and the JSON it refreshes itself from
(`static/dashboard/dashboard.js`).
"""
