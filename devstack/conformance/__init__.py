"""The partner conformance kit: `manage.py check_partner` runs partner-apis.md against a
partner's sandbox and says, check by check, what the partner answered.

    contract.py  what the contract says each partner's calls look like (paths, bodies, auth)
    http.py      one request with its retries (Retry-After honoured) and what came back
    checks.py    one small function per check, each returning a PASS or FAIL with evidence
    runner.py    the checks in order, then the cleanup, whatever happened (Ctrl-C included)
    report.py    the pass/fail table, with every credential and card token masked

It relies only on what partner-apis.md says, never on a quirk of our simulators: any
server that keeps the contract passes.
"""
