"""PII detectors and the stream redactor: what they find, and that a stream split anywhere is
redacted exactly as the whole text is (hypothesis, bounded)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay_server.domain.guardrails import PolicyError, parse_policy
from relay_server.text.pii import PLACEHOLDERS, StreamRedactor, iban_ok, luhn, replace, scanner

ALL = scanner(PLACEHOLDERS)


def redact(text: str) -> str:
    return replace(text, ALL.scan(text))


def stream(pieces: list[str]) -> str:
    r = StreamRedactor(ALL, lambda _f: None)
    return "".join(r.feed(p) for p in pieces) + r.flush()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("mail me at jane.doe+x@example.co.uk today", "mail me at [EMAIL] today"),
        ("card 4111 1111 1111 1111.", "card [CREDIT_CARD]."),
        ("card 4111-1111-1111-1112 is not valid", "card 4111-1111-1111-1112 is not valid"),
        ("IBAN GB82 WEST 1234 5698 7654 32 ok", "IBAN [IBAN] ok"),
        ("IBAN GB82WEST12345698765433 bad checksum", "IBAN GB82WEST12345698765433 bad checksum"),
        ("key rly_live_sk_abcdefghijklmnopqrstuvwxyz012345 leaked", "key [SECRET] leaked"),
        ("key sk-proj-abcdefghijklmnopqrstuv1234", "key [SECRET]"),
        ("ssn 123-45-6789 and dni 12345678Z", "ssn [NATIONAL_ID] and dni [NATIONAL_ID]"),
        ("host 10.0.0.254 and ::1 and 2001:db8::7", "host [IP] and [IP] and [IP]"),
        ("version 1.2.3.4.5 is no address", "version 1.2.3.4.5 is no address"),
        ("call +44 20 7946 0958 now", "call [PHONE] now"),
        ("nothing here 12 apples", "nothing here 12 apples"),
    ],
)
def test_detectors(text: str, expected: str) -> None:
    assert redact(text) == expected


def _luhn_complete(body: str) -> str:
    for check in "0123456789":
        if luhn(body + check):
            return body + check
    raise AssertionError


cards = st.text("0123456789", min_size=15, max_size=15).map(_luhn_complete)
filler = st.text(alphabet=st.sampled_from("abc xyz.,;:!?()-_/"), max_size=60)


@settings(max_examples=150, deadline=None)
@given(before=filler, card=cards, after=filler)
def test_any_valid_card_is_redacted(before: str, card: str, after: str) -> None:
    assert card not in redact(f"{before} {card} {after}")


@settings(max_examples=300, deadline=None)
@given(
    parts=st.lists(
        st.one_of(filler, cards, st.just("jo.doe@mail.example.org"), st.just("GB82 WEST 1234 5698 7654 32"),
                  st.just("sk-ant-api03-ABCDEFGHIJKLMNOPQRSTUVWX"), st.just("192.168.1.20"), st.just(" 555-12-3456 ")),
        max_size=8,
    ),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=12),
)
def test_a_stream_split_anywhere_is_redacted_as_the_whole(parts: list[str], cuts: list[int]) -> None:
    text = " ".join(parts)
    bounds = sorted({c % (len(text) + 1) for c in cuts})
    pieces = [text[a:b] for a, b in zip([0, *bounds], [*bounds, len(text)])]
    assert stream(pieces) == redact(text)


def test_a_stream_holds_back_at_most_the_window() -> None:
    only_cards = scanner(["credit_card"])
    r = StreamRedactor(only_cards, lambda _f: None)
    assert r.feed("x" * 100) == "x" * (100 - only_cards.window)
    shown = r.feed("4111 1111") + r.feed(" 1111 1111 ") + r.feed("y" * 100) + r.flush()
    assert "4111" not in shown and "[CREDIT_CARD]" in shown


def test_iban_and_luhn() -> None:
    assert iban_ok("DE89 3704 0044 0532 0130 00")
    assert not iban_ok("DE89 3704 0044 0532 0130 01")
    assert luhn("4242424242424242") and not luhn("4242424242424241")


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        ("[]", "JSON object"),
        ('{"pii": {"email": "shout"}}', "block, redact or flag"),
        ('{"pii": {"passport": "block"}}', "unknown PII detector"),
        ('{"deny": {"patterns": ["(unclosed"]}}', "not a valid regular expression"),
        ('{"input": {"max_messages": 0}}', "positive integer"),
        ('{"input": {"allowed_content_types": ["video"]}}', "allowed_content_types"),
        ('{"output_schema": "maybe"}', "off, retry or error"),
        ('{"classifier": {"url": "https://x", "timeout_ms": 5}}', "timeout_ms"),
        ('{"keys": {"k1": {"pii": {"ip": "nope"}}}}', "keys.k1.pii.ip"),
    ],
)
def test_invalid_policies_are_refused_with_the_reason(raw: str, why: str) -> None:
    with pytest.raises(PolicyError, match=why.replace("(", r"\(")):
        parse_policy(raw)


def test_a_key_section_replaces_the_tenants() -> None:
    policies = parse_policy('{"pii": {"email": "redact"}, "injection": "block", "keys": {"k1": {"pii": {}}}}')
    assert policies.tenant.pii == {"email": "redact"}
    assert policies.for_key("k1").pii == {} and policies.for_key("k1").injection == "block"
    assert policies.for_key("k2") is policies.tenant
    assert not parse_policy("{}").tenant.active
