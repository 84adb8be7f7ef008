"""Secrets never reach a stored or logged message: `redact`, provider errors, log records."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import httpx
import pytest
import respx

from supasaasy.config import AppConfig
from supasaasy.connectors import ProviderError, create_connector
from supasaasy.connectors.http import ProviderClient, RetryPolicy
from supasaasy.connectors.stripe import StripeConnector
from supasaasy.redact import RedactingFilter, redact

STRIPE_KEY = "sk_test_51AbCdEfGhIjKlMnOpQrStUv"
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJyb2xlIjoic2VydmljZV9yb2xlIn0.c2lnbmF0dXJlLXRoYXQtaXMtbG9uZw"
API = "https://provider.test"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"Invalid API Key provided: {STRIPE_KEY}", "Invalid API Key provided: sk_test_[REDACTED]"),
        ("key sk_live_9zYxWvUtSrQpOnMl ok", "key sk_live_[REDACTED] ok"),
        ("rk_live_AbC123dEf456 and rk_test_XyZ789", "rk_live_[REDACTED] and rk_test_[REDACTED]"),
        ("signing secret whsec_AbCdEf0123456789", "signing secret whsec_[REDACTED]"),
        ("Authorization: Bearer abc.DEF-ghi_123~+/==", "Authorization: Bearer [REDACTED]"),
        ("got bearer 0123456789abcdef!", "got bearer [REDACTED]!"),
        ("Authorization: Basic dXNlcjpwYXNzd29yZA==", "Authorization: Basic [REDACTED]"),
        ("notion secret_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789abcd", "notion secret_[REDACTED]"),
        ("token ntn_1234567890AbCdEfGhIjKlMnOp", "token ntn_[REDACTED]"),
        (f"apikey={JWT}; next", "apikey=[REDACTED]; next"),
        (f"Bearer {STRIPE_KEY} was refused", "Bearer [REDACTED] was refused"),
    ],
)
def test_key_shaped_strings_are_redacted(text: str, expected: str) -> None:
    assert redact(text) == expected
    assert redact(expected) == expected


@pytest.mark.parametrize(
    "text",
    [
        "Stripe GET /v1/customers failed after 5 retries: 503 Service Unavailable",
        "No such customer: 'cus_N1c2d3e4f5g6h7'; pk_test_PublicKeyIsFine123",
        "secret_from_env, secret_key, the client_secret, a basic plan, mask_test_value",
        "Invalid API Key provided: sk_test_********************abcd",
        "bearer token missing; Basic auth refused",
        "",
    ],
)
def test_text_without_secrets_is_unchanged(text: str) -> None:
    assert redact(text) == text


def test_given_secrets_are_redacted_whatever_their_shape() -> None:
    token = "dG9rOmFiY2RlZjEyMzQ1Njc4OTA="
    text = f"token {token} is invalid; short x1 stays; so does 'abc'"
    assert redact(text, [token, "x1", "", "abc"]) == (
        "token [REDACTED] is invalid; short x1 stays; so does 'abc'"
    )
    assert redact("a-long-secret and a-long-secret-too", ["a-long-secret",
                  "a-long-secret-too"]) == "[REDACTED] and [REDACTED]"  # fmt: skip


# -- provider errors ----------------------------------------------------------------


def client(token: str) -> ProviderClient:
    http = httpx.Client(base_url=API, headers={"Authorization": f"Bearer {token}"})
    return ProviderClient("Provider", http, acquire=lambda: None,
                          retry=RetryPolicy(max_retries=1), sleep=lambda _: None)  # fmt: skip


@respx.mock(base_url=API, assert_all_called=True)
def test_a_provider_that_echoes_the_key_gives_an_error_without_it(
    respx_mock: respx.MockRouter,
) -> None:
    respx_mock.get("/v1/customers").respond(
        400, json={"error": {"message": f"Bad header: Authorization: Bearer {STRIPE_KEY}"}}
    )
    with pytest.raises(ProviderError) as caught:
        client(STRIPE_KEY).get_json("/v1/customers")
    assert STRIPE_KEY not in str(caught.value)
    assert str(caught.value) == (
        "Provider GET /v1/customers failed: 400 Bad header: Authorization: Bearer [REDACTED]"
    )
    assert caught.value.status == 400


@respx.mock(base_url=API, assert_all_called=True)
def test_the_clients_own_token_is_redacted_even_without_a_known_shape(
    respx_mock: respx.MockRouter,
) -> None:
    token = "dG9rOmFiY2RlZjEyMzQ1Njc4OTA="  # an Intercom-like access token
    respx_mock.get("/things").respond(503, json={"error": f"token {token} overloaded"})
    with pytest.raises(ProviderError) as caught:
        client(token).get_json("/things")
    assert token not in str(caught.value)
    assert str(caught.value).endswith("retries: 503 token [REDACTED] overloaded")


@respx.mock(base_url="https://stripe.test", assert_all_called=True)
def test_a_stripe_sync_failure_does_not_carry_the_key(
    respx_mock: respx.MockRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REDACT_STRIPE_KEY", STRIPE_KEY)
    respx_mock.get("/v1/customers").respond(
        401, json={"error": {"message": f"Invalid API Key provided: {STRIPE_KEY}"}}
    )
    config = {"api_key_env": "REDACT_STRIPE_KEY", "api_base": "https://stripe.test"}
    app = AppConfig(app_key="redact", connector="stripe", config=config)
    stripe = create_connector(app)
    assert isinstance(stripe, StripeConnector)
    with pytest.raises(ProviderError) as caught:
        next(iter(stripe.full_sync("customer")))
    assert STRIPE_KEY not in str(caught.value)
    assert "sk_test_[REDACTED]" in str(caught.value)


def test_provider_errors_built_anywhere_are_redacted() -> None:
    assert str(ProviderError(f"refused {STRIPE_KEY}", status=401)) == "refused sk_test_[REDACTED]"


# -- logs -------------------------------------------------------------------------


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    with caplog.at_level(logging.DEBUG):
        yield caplog


@pytest.mark.parametrize("name", ["supasaasy", "supasaasy.worker", "supasaasy.connectors.x"])
def test_log_lines_of_the_package_are_redacted(logs: pytest.LogCaptureFixture, name: str) -> None:
    logging.getLogger(name).warning("task %s failed: %s", "t1", f"Bearer {STRIPE_KEY}")
    assert STRIPE_KEY not in logs.text
    assert logs.records[0].getMessage() == "task t1 failed: Bearer [REDACTED]"


def test_exception_text_in_the_package_logs_is_redacted(logs: pytest.LogCaptureFixture) -> None:
    try:
        raise RuntimeError(f"upstream said {JWT}")
    except RuntimeError:
        logging.getLogger("supasaasy.http").exception("unexpected error")
    assert JWT not in logs.text
    assert "RuntimeError: upstream said [REDACTED]" in logs.text


def test_other_loggers_are_left_alone(logs: pytest.LogCaptureFixture) -> None:
    logging.getLogger("elsewhere").warning("%s", STRIPE_KEY)
    assert logs.records[0].getMessage() == STRIPE_KEY


def test_the_filter_redacts_a_record_and_keeps_it() -> None:
    record = logging.LogRecord("any", logging.INFO, __file__, 1, "key %s and %d", (STRIPE_KEY, 3),
                               None)  # fmt: skip
    assert RedactingFilter().filter(record) is True
    assert (record.getMessage(), record.args) == ("key sk_test_[REDACTED] and 3", ())
    untouched = logging.LogRecord("any", logging.INFO, __file__, 1, "n=%d", (3,), None)
    RedactingFilter().filter(untouched)
    assert (untouched.msg, untouched.args) == ("n=%d", (3,))


def test_a_record_whose_args_do_not_fit_is_left_to_logging() -> None:
    record = logging.LogRecord("any", logging.INFO, __file__, 1, "%d tasks", ("many",), None)
    assert RedactingFilter().filter(record) is True
    assert (record.msg, record.args) == ("%d tasks", ("many",))
