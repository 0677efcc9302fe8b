"""Fake provider HTTP servers with fault injection, for integration and e2e tests.

    async with FakeOpenAI() as fake:
        fake.inject(Fault(status=429, retry_after="3"))
        ... call fake.base_url ...
        assert fake.last.body["model"] == "gpt-4o-mini"
"""

from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.faults import FAULT_HEADER, Fault, RecordedRequest, Reply, parse_fault
from tests.fakes.openai_server import FakeOpenAI

__all__ = ["FAULT_HEADER", "FakeAnthropic", "FakeOpenAI", "Fault", "RecordedRequest", "Reply", "parse_fault"]
