"""Header values built from names Relay does not control (route targets, reasons) stay printable ASCII."""

from __future__ import annotations

from relay_server.api.response_headers import _MAX_HEADER, _ascii


def _reference(value: str) -> str:
    return "".join(c if " " <= c <= "~" else "?" for c in value)[:_MAX_HEADER]


def test_printable_ascii_passes_unchanged_and_is_capped() -> None:
    assert _ascii("gpt-4o-mini@openai") == "gpt-4o-mini@openai"
    assert _ascii("") == ""
    assert _ascii("a" * (_MAX_HEADER + 10)) == "a" * _MAX_HEADER


def test_every_other_character_is_replaced_as_before() -> None:
    for code in range(0x200):
        value = f"m{chr(code)}@p"
        assert _ascii(value) == _reference(value), hex(code)
    for value in ("modèle@fournisseur", "模型@提供者", "tab\there", "line\nbreak", "del\x7f", "nul\x00", "emoji🙂", "\u2028sep"):
        sanitised = _ascii(value)
        assert sanitised == _reference(value)
        assert all(" " <= c <= "~" for c in sanitised), value
    assert _ascii("é" * (_MAX_HEADER + 5)) == "?" * _MAX_HEADER
