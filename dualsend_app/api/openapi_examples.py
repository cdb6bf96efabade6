"""The examples of the OpenAPI document (openapi.py): what a reader of /api/docs copies.

tests/test_openapi.py checks that each one is a valid instance of its schema.
"""

from . import validation

ORDER_REQUEST_EXAMPLE = {
    "items": [{"sku": "SKU-1", "quantity": 2}],
    "amount": 1999,
    "currency": "usd",
    "payment_source": "tok_visa",
}
ORDER_ID = "0b9f6f1e-2d55-4a4e-9a43-6f6d7c3a1f20"
ORDER_EXAMPLE = {
    "value": {
        "id": ORDER_ID,
        "status": "completed",
        "status_reason": "",
        "correlation_id": "checkout-42",
        "created_at": "2025-01-31T12:00:00.120000+00:00",
        "dispatched_at": "2025-01-31T12:00:00.131000+00:00",
        "settled_at": "2025-01-31T12:00:00.655000+00:00",
        "payload": ORDER_REQUEST_EXAMPLE | {"payment_source": "••••visa"},
        "url": f"/api/orders/{ORDER_ID}",
        "sends": [
            {
                "operation": operation,
                "status": "succeeded",
                "failure_kind": "",
                "attempts": 1,
                "last_status_code": 201,
                "remote_id": remote_id,
                "error": "",
                "idempotency_key": key,
                "first_attempt_at": "2025-01-31T12:00:00.140000+00:00",
                "last_attempt_at": "2025-01-31T12:00:00.140000+00:00",
                "finished_at": finished_at,
            }
            for operation, remote_id, key, finished_at in (
                (
                    "inventory.reserve",
                    "res_8c1d",
                    "5b0e1c2a-7f0b-4c59-9a8e-2f1d6a0b3c4d",
                    "2025-01-31T12:00:00.452000+00:00",
                ),
                (
                    "payment.charge",
                    "ch_51f0",
                    "9d3c7a10-1e2f-4b6a-8c5d-0e9f8a7b6c5d",
                    "2025-01-31T12:00:00.648000+00:00",
                ),
            )
        ],
    }
}
BATCH_EXAMPLE = {
    "results": [
        {
            "index": 0,
            "status": 202,
            "location": f"/api/orders/{ORDER_ID}",
            # Just created: its sends are still to be made.
            "order": ORDER_EXAMPLE["value"]
            | {
                "status": "pending",
                "dispatched_at": None,
                "settled_at": None,
                "sends": [
                    send
                    | {
                        "status": "pending",
                        "attempts": 0,
                        "last_status_code": None,
                        "remote_id": "",
                        "first_attempt_at": None,
                        "last_attempt_at": None,
                        "finished_at": None,
                    }
                    for send in ORDER_EXAMPLE["value"]["sends"]
                ],
            },
        },
        {
            "index": 1,
            "status": 422,
            "error": {
                "code": "invalid_fields",
                "message": "some fields are invalid",
                "fields": {"amount": validation.AMOUNT_MESSAGE},
            },
        },
        {
            "index": 2,
            "status": 409,
            "error": {
                "code": "idempotency_in_progress",
                "message": "a request with this Idempotency-Key is still being processed; "
                "retry shortly",
            },
            "retry_after": 1,
        },
    ]
}
