"""Simulators of dualsend's two partner APIs (inventory and payment).

Real HTTP servers on 127.0.0.1 that keep the partner API contract (partner-apis.md,
shared with the partners), with knobs and scripted faults, for the demo, the
integration tests, chaos runs and benchmarks. Nothing in this package imports Django.

    server.py             the two aiohttp apps wired and run; the command line
    pipeline.py           the stages of a partner request, auth to answer (``Call``)
    validation.py         the request bodies the contract accepts
    effects.py            what each operation does to the ledger; the operations
    answers.py            an answer before it is sent; the one error shape
    state.py              settings, each partner's state, what both partners share
    control_endpoints.py  the ``/_sim/*`` control API
    faults.py             knobs, scripted faults, the rate limit window
    ledger.py             the real effects per order, the request log, idempotency keys
    control.py            ``SimulatorControl``, the control API's client for tests
"""
