"""Reading upstream error bodies of every shape."""

from __future__ import annotations

import pytest

from otari_server.providers.error_bodies import error_details


@pytest.mark.parametrize(
    ("body", "details"),
    [
        (
            {
                "error": {
                    "message": "Bad key",
                    "type": "invalid_request_error",
                    "code": "invalid_api_key",
                }
            },
            ("invalid_request_error", "Bad key"),
        ),
        (
            {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
            ("overloaded_error", "Overloaded"),
        ),
        ({"error": "model 'x' not found"}, (None, "model 'x' not found")),
        ({"detail": "Not Found"}, (None, "Not Found")),
        (
            {"object": "error", "message": "vLLM says no", "type": "BadRequestError", "code": 400},
            ("BadRequestError", "vLLM says no"),
        ),
        ({"error": {"message": ""}}, (None, None)),
        ({"detail": [{"loc": ["body"]}]}, (None, None)),
        ("<html>502</html>", (None, None)),
        (None, (None, None)),
    ],
)
def test_error_details(body: object, details: tuple[str | None, str | None]) -> None:
    assert error_details(body) == details
