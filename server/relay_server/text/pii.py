"""PII detectors: find, and replace with a typed placeholder, the personal data and secrets a
guardrail policy names (``domain/guardrails.py``).

Each detector is a bounded regular expression (every match is at most ``window`` characters:
what lets a stream be redacted while holding back no more than that) and, where the format has
one, a checksum that turns a digit run into a finding only when it is real: Luhn for cards,
ISO 13616 mod-97 for IBANs, the check letter of a Spanish DNI.  ``StreamRedactor`` applies the
same rules to text that arrives in pieces and gives exactly what ``redact`` gives on the whole.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Finding:
    detector: str
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class _Detector:
    name: str
    pattern: re.Pattern[str]
    window: int
    valid: Callable[[str], bool] | None = None
    chars: frozenset[str] = frozenset("0123456789")
    """Every match contains one of these characters (or of ``literals``): text with none is not scanned."""
    literals: tuple[str, ...] = ()

    def triggered(self, segment: str) -> bool:
        return not self.chars.isdisjoint(segment) or any(lit in segment for lit in self.literals)


def _digits(text: str) -> str:
    return "".join(c for c in text if c.isdigit())


def luhn(number: str) -> bool:
    digits = [int(c) for c in number]
    if not 13 <= len(digits) <= 19:
        return False
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def iban_ok(text: str) -> bool:
    compact = text.replace(" ", "").upper()
    if not 15 <= len(compact) <= 34:
        return False
    moved = compact[4:] + compact[:4]
    return int("".join(str(int(c, 36)) for c in moved)) % 97 == 1


def _card(text: str) -> bool:
    return luhn(_digits(text))


def _phone(text: str) -> bool:
    return 9 <= len(_digits(text)) <= 15


def _ssn(text: str) -> bool:
    area, group, serial = text.split("-")
    return area not in ("000", "666") and not area.startswith("9") and group != "00" and serial != "0000"


def _dni(text: str) -> bool:
    number, letter = text[:8], text[-1]
    return "TRWAGMYFPDXBNJZSQVHLCKE"[int(number) % 23] == letter


def _ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_DETECTORS: dict[str, _Detector] = {d.name: d for d in (
    _Detector("secret", re.compile(
        r"(?<![\w-])(?:rly_(?:live|test)_sk_[A-Za-z0-9_-]{16,64}|sk-(?:proj-|ant-(?:api\d\d-)?)?[A-Za-z0-9_-]{20,160}"
        r"|AKIA[0-9A-Z]{16}|gh[pousr]_[A-Za-z0-9]{36}|xox[bpas]-[A-Za-z0-9-]{10,80})(?![\w-])"), 180,
        chars=frozenset("_"), literals=("sk-", "xox", "AKIA")),
    _Detector("credit_card", re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d])"), 37, _card),
    _Detector("iban", re.compile(r"(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}(?![A-Za-z0-9])"), 64, iban_ok),
    _Detector("us_ssn", re.compile(r"(?<![\d-])\d{3}-\d{2}-\d{4}(?![\d-])"), 11, _ssn),
    _Detector("uk_nino", re.compile(r"(?<![A-Za-z0-9])[A-CEGHJ-PR-TW-Z]{2} ?\d{2} ?\d{2} ?\d{2} ?[A-D](?![A-Za-z0-9])"), 13),
    _Detector("es_dni", re.compile(r"(?<![A-Za-z0-9])\d{8}-?[A-Z](?![A-Za-z0-9])"), 10, lambda t: _dni(t.replace("-", ""))),
    _Detector("email", re.compile(
        r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]{1,64}@(?:[A-Za-z0-9-]{1,63}\.){1,4}[A-Za-z]{2,24}(?![A-Za-z0-9-])"), 345,
        chars=frozenset("@")),
    _Detector("ip", re.compile(rf"(?<![\d.]){_OCTET}(?:\.{_OCTET}){{3}}(?!\.?\d)"), 15, _ip),
    _Detector("ip6", re.compile(r"(?<![\w:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])"), 39, _ip,
              chars=frozenset(":")),
    _Detector("phone", re.compile(r"(?<![\w+])\+?\d{1,3}[ .-]?\(?\d{2,4}\)?(?:[ .-]?\d{2,4}){2,4}(?![\w])"), 32, _phone),
)}  # fmt: skip
# A character or prefix every match of a detector contains.
# Earlier detectors win where findings overlap (a card number is not also a phone number).
PLACEHOLDERS = {"email": "[EMAIL]", "phone": "[PHONE]", "credit_card": "[CREDIT_CARD]", "iban": "[IBAN]",
                "national_id": "[NATIONAL_ID]", "secret": "[SECRET]", "ip": "[IP]"}  # fmt: skip
_CONTEXT = 2  # characters before a scan's start that its lookbehinds may examine


@dataclass(frozen=True, slots=True)
class Scanner:
    """The detectors of one policy, ready to run (built once per policy version)."""

    detectors: tuple[_Detector, ...]
    kinds: dict[str, str]  # regex detector name -> policy detector (us_ssn -> national_id)

    window: int
    """The longest match any of the detectors can produce."""
    chars: frozenset[str] = frozenset()  # every detector's trigger characters
    literals: tuple[str, ...] = ()

    def raw(self, text: str, pos: int = 0) -> list[Finding]:
        segment = text[pos:] if pos else text
        every = not segment.isascii()  # \d also matches other scripts' digits: scan them all
        found = []
        for d in self.detectors:
            if not every and not d.triggered(segment):
                continue  # most prose: a set test instead of the detector's scan
            for m in d.pattern.finditer(text, pos):
                if d.valid is None or d.valid(m.group()):
                    found.append(Finding(self.kinds[d.name], m.start(), m.end()))
        return found

    def triggered(self, text: str, pos: int = 0) -> bool:
        """Could ``text[pos:]`` hold a match?  Set tests in C, far cheaper than any scan."""
        segment = text[pos:] if pos else text
        return not segment.isascii() or not self.chars.isdisjoint(segment) or any(lit in segment for lit in self.literals)

    def scan(self, text: str, pos: int = 0) -> list[Finding]:
        """Non-overlapping findings, leftmost first (the higher-priority one where two start together)."""
        return resolve(self.raw(text, pos))


def scanner(detectors: Iterable[str], national_ids: Sequence[str] = ("us_ssn", "uk_nino", "es_dni")) -> Scanner:
    chosen, kinds = [], {}
    wanted = set(detectors)
    for name, d in _DETECTORS.items():
        kind = "national_id" if name in ("us_ssn", "uk_nino", "es_dni") else "ip" if name == "ip6" else name
        if kind in wanted and (kind != "national_id" or name in national_ids):
            chosen.append(d)
            kinds[name] = kind
    return Scanner(
        tuple(chosen), kinds, max((d.window for d in chosen), default=0),
        frozenset().union(*(d.chars for d in chosen)), tuple({lit for d in chosen for lit in d.literals}),
    )  # fmt: skip


def resolve(findings: list[Finding]) -> list[Finding]:
    ordered = sorted(findings, key=lambda f: (f.start, _PRIORITY_OF.get(f.detector, 99), -f.end))
    kept: list[Finding] = []
    for f in ordered:
        if not kept or f.start >= kept[-1].end:
            kept.append(f)
    return kept


_PRIORITY_OF = {"secret": 0, "credit_card": 1, "iban": 2, "national_id": 3, "email": 4, "ip": 5, "phone": 6}


def replace(text: str, findings: Sequence[Finding], keep: Callable[[str], bool] = lambda _d: False) -> str:
    """``text`` with each finding replaced by its placeholder (unless ``keep(detector)``)."""
    if not findings:
        return text
    out, at = [], 0
    for f in findings:
        if keep(f.detector):
            continue
        out.append(text[at:f.start])
        out.append(PLACEHOLDERS[f.detector])
        at = f.end
    out.append(text[at:])
    return "".join(out)


class StreamRedactor:
    """Redacts text that arrives in pieces, holding back at most ``scanner.window`` characters.

    ``feed`` returns what may be shown now; ``flush`` the rest at the end.  Findings are
    reported through ``on_finding`` (once each).  A piece of text is shown only once no match
    could still cover it: it lies more than a window before the end of what has arrived, and no
    candidate match (valid or not yet) crosses it.
    """

    __slots__ = ("_context", "_hot", "_keep", "_on_finding", "_pending", "_scanner")

    def __init__(self, scanner: Scanner, on_finding: Callable[[Finding], None],
                 keep: Callable[[str], bool] = lambda _d: False) -> None:  # fmt: skip
        self._scanner = scanner
        self._on_finding = on_finding
        self._keep = keep
        self._pending = ""
        self._context = ""  # the last characters shown: the lookbehinds of the next scan see them
        self._hot = False  # the held-back text holds a trigger: only then can it hold a match

    def feed(self, piece: str) -> str:
        self._pending += piece
        if not self._hot:  # look at the new text only (and the few characters a trigger may straddle)
            self._hot = self._scanner.triggered(self._pending, max(0, len(self._pending) - len(piece) - 4))
        cut = len(self._pending) - self._scanner.window
        if cut <= 0:
            return ""
        if not self._hot:  # nothing held back can be part of a match: show all but the window
            shown, self._pending = self._pending[:cut], self._pending[cut:]
            self._context = shown[-_CONTEXT:]
            return shown
        text = self._context + self._pending
        base = len(self._context)
        raw = self._scanner.raw(text, base)
        cut += base
        moved = True
        while moved:  # never cut through a candidate: it may still complete
            moved = False
            for f in raw:
                if f.start < cut < f.end:
                    cut, moved = f.start, True
        return self._emit(text, base, cut, [f for f in resolve(raw) if f.end <= cut])

    def flush(self) -> str:
        text = self._context + self._pending
        base = len(self._context)
        return self._emit(text, base, len(text), self._scanner.scan(text, base))

    def _emit(self, text: str, base: int, cut: int, findings: list[Finding]) -> str:
        if cut <= base:
            return ""
        for f in findings:
            self._on_finding(f)
        shown = replace(text[base:cut], [Finding(f.detector, f.start - base, f.end - base) for f in findings], self._keep)
        self._pending = text[cut:]
        self._context = text[max(0, cut - _CONTEXT):cut]
        self._hot = self._scanner.triggered(self._pending)
        return shown
