"""Twilio webhook signatures: the documented vector, the twilio package as oracle."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twilio.request_validator import RequestValidator

from voxpipe.server.signature import compute_signature, signature_matches, url_variants

URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
PARAMS = {
    "CallSid": "CA1234567890ABCDE",
    "Caller": "+12349013030",
    "Digits": "1234",
    "From": "+12349013030",
    "To": "+18005551212",
}


def test_known_vector() -> None:
    assert compute_signature("12345", URL, PARAMS) == "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
    assert signature_matches("12345", URL, PARAMS, "0/KCTR6DLpKmkAf8muzZqo1nDgQ=")
    assert not signature_matches("12346", URL, PARAMS, "0/KCTR6DLpKmkAf8muzZqo1nDgQ=")
    assert not signature_matches(
        "12345", URL, {**PARAMS, "Digits": "1235"}, "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
    )
    assert not signature_matches("12345", URL, PARAMS, None)


def test_port_variants_are_accepted() -> None:
    sig = compute_signature("tok", "https://example.com:443/twilio/voice", {"A": "1"})
    assert signature_matches("tok", "https://example.com/twilio/voice", {"A": "1"}, sig)
    assert url_variants("http://h:8080/x?y=1") == ["http://h:8080/x?y=1", "http://h/x?y=1"]


@settings(max_examples=300, deadline=None)
@given(
    token=st.text(min_size=1, max_size=20),
    path=st.text(alphabet="abcdefghij/_-", max_size=20),
    params=st.lists(st.tuples(st.text(min_size=1, max_size=8), st.text(max_size=12)), max_size=6),
)
def test_agrees_with_the_twilio_package(
    token: str, path: str, params: list[tuple[str, str]]
) -> None:
    url = f"https://example.com/{path}"
    multi: dict[str, list[str]] = {}
    for k, v in params:
        multi.setdefault(k, []).append(v)

    class MultiDict(dict):  # the shape the twilio validator reads repeated names from
        def getall(self, key: str) -> list[str]:
            return multi[key]

    oracle = RequestValidator(token).compute_signature(url, MultiDict(multi))
    assert compute_signature(token, url, params) == oracle
    assert signature_matches(token, url, multi, oracle)
