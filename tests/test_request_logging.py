"""A request path is logged quoted: a `%0A` in it cannot forge a line in the web log."""

import logging

import pytest

pytestmark = pytest.mark.django_db

VIEWS_LOGGER = "dualsend_app.api.views"


def test_a_newline_in_the_path_cannot_forge_a_log_line(client, caplog):
    """GET /api/orders/x%0Aforged: one record for the answer, with no newline in it."""
    caplog.set_level(logging.INFO)

    response = client.get("/api/orders/x%0Aforged", headers={"Authorization": "Bearer test-token"})

    assert response.status_code == 404
    answered = [record for record in caplog.records if record.name == VIEWS_LOGGER]
    assert len(answered) == 1
    message = answered[0].getMessage()
    assert "\n" not in message
    assert r"'/api/orders/x\nforged'" in message
    assert all("\n" not in record.getMessage() for record in caplog.records)
