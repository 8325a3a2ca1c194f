"""Schemathesis hooks: sign every request as the app does and give it a live bearer token,
so generated requests get past the signature layer and reach the handlers.

Loaded through SCHEMATHESIS_HOOKS by tests/fuzz/run_api_fuzz.py, which sets FUZZ_BASE_URL and
FUZZ_SIGNING_SECRET.
"""

import hashlib
import hmac
import os
import time

import requests
import schemathesis

SECRET = os.environ["FUZZ_SIGNING_SECRET"].encode()
BASE_URL = os.environ["FUZZ_BASE_URL"]


def signature_headers(method: str, path_and_query: str, body: bytes) -> dict:
    """The v1 signature (src/signature.rs)."""
    timestamp = str(int(time.time()))
    message = "\n".join(["v1", timestamp, method, path_and_query, hashlib.sha256(body).hexdigest()])
    tag = hmac.new(SECRET, message.encode(), hashlib.sha256).hexdigest()
    return {"X-DailyReps-Timestamp": timestamp, "X-DailyReps-Signature": f"v1={tag}"}


class Account:
    """One registered account, made again after a generated request deletes it."""

    token = None

    @classmethod
    def bearer(cls) -> str:
        if cls.token is None:
            response = requests.post(
                f"{BASE_URL}/api/users", data=b"", headers=signature_headers("POST", "/api/users", b""), timeout=10
            )
            response.raise_for_status()
            cls.token = response.json()["token"]
        return cls.token


class Credentials(requests.auth.AuthBase):
    """Makes the credentials a case carries valid, on the prepared request, whose body is the
    exact bytes that go on the wire. A case that leaves them out (schemathesis testing that
    the API refuses such requests) is sent without them."""

    def __init__(self, sign: bool, bearer: bool):
        self.sign = sign
        self.bearer = bearer

    def __call__(self, request):
        if self.sign:
            body = request.body or b""
            if isinstance(body, str):
                body = body.encode()
            request.headers.update(signature_headers(request.method, request.path_url, body))
        if self.bearer:
            request.headers["Authorization"] = f"Bearer {Account.bearer()}"
        return request


@schemathesis.hook
def before_call(context, case, kwargs):
    present = {name.lower() for name in (case.headers or {})}
    kwargs["auth"] = Credentials(
        sign={"x-dailyreps-signature", "x-dailyreps-timestamp"} <= present,
        bearer="authorization" in present,
    )


@schemathesis.hook
def after_call(context, case, response):
    if case.method.upper() == "DELETE" and case.path == "/api/users/me" and response.status_code == 204:
        Account.token = None


# A cursor is opaque: only the server can make one, so a made-up string the document's pattern
# allows is still a client's mistake (400). No schema can say "issued by this server".
MADE_UP_CURSOR = "cursor is not one this server issued"


@schemathesis.hook
def filter_failure(context, failure, case, response):
    made_up_cursor = failure.code == "ST202" and response.status_code == 400 and MADE_UP_CURSOR in response.text
    return not made_up_cursor
