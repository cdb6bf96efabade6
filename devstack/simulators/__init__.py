"""Simulators of dualsend's two partner APIs (inventory and payment).

Real HTTP servers on 127.0.0.1 that keep /work/shared/partner-apis.md, with
knobs and scripted faults, for the demo, the integration tests, chaos runs and
benchmarks. ``server`` runs them, ``control`` drives them from tests. Nothing
in this package imports Django.
"""
