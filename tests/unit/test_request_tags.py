from __future__ import annotations

import pytest

from relay_server.errors import RelayError
from relay_server.pipeline.steps.request_tags import HEADER, parse_request_tags


def test_tags_are_parsed_to_strings() -> None:
    tags = parse_request_tags({HEADER: '{"feature": "search", "n": 3, "beta": true}'})
    assert tags == {"feature": "search", "n": "3", "beta": "true"}
    assert parse_request_tags({}) is None and parse_request_tags({HEADER: "  "}) is None


@pytest.mark.parametrize(
    "raw",
    ['{"a": 1', '["a"]', '"text"', '{"a": {"nested": 1}}', '{"a": null}', '{"": "x"}',
     "{" + ",".join(f'"k{i}": 1' for i in range(17)) + "}", '{"a": "' + "x" * 513 + '"}',
     '{"a": "b\\u0000c"}', '{"a\\u0000": "x"}'],
)
def test_bad_tags_are_a_400(raw: str) -> None:
    with pytest.raises(RelayError) as info:
        parse_request_tags({HEADER: raw})
    assert info.value.http_status == 400 and info.value.code == "invalid_header"
