"""The admission step of guardrails: the principal's policy, the input checks, and the output
filter the stream session will call (``Admitted.output``)."""

from __future__ import annotations

from relay_server.domain.request import RequestContext
from relay_server.observability.tracing import step
from relay_server.pipeline.guardrails.classifier import ClassifierClient
from relay_server.pipeline.guardrails.inbound import check_input
from relay_server.pipeline.guardrails.outbound import OutputGuard
from relay_server.pipeline.guardrails.policy import GuardrailSource


class Guardrails:
    def __init__(self, source: GuardrailSource, classifier: ClassifierClient | None = None) -> None:
        self._source = source
        self._classifier = classifier

    async def admit(self, ctx: RequestContext, input_tokens: int) -> OutputGuard | None:
        """Check the input (raises the refusal); the request's output filter, if it needs one."""
        assert ctx.principal is not None
        guard = await self._source.for_principal(ctx.principal)
        if guard is None or ctx.kind == "embedding":
            return None
        with step("relay.guardrails"):
            original = ctx.body
            await check_input(ctx, guard, input_tokens, self._classifier)
            output = OutputGuard(ctx, guard)
            if ctx.body is not original or output.needed:
                # The provider must see the redacted body and the output must be rewritable: a door's
                # native pass-through (client bytes in, provider bytes out) can do neither.
                ctx.native_body = None
        return output if output.needed else None

    async def close(self) -> None:
        if self._classifier is not None:
            await self._classifier.close()
