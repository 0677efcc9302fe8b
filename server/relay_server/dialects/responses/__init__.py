"""OpenAI Responses ↔ OpenAI chat completions, both directions.

- ``request``: a Responses request (+ the rebuilt conversation) → the chat body every provider
  translator understands, and the body sent to a provider that speaks Responses natively;
- ``output``: a chat completion → Responses output items and the ``response`` object;
- ``stream``: chat chunks → the Responses semantic events, with sequence numbers;
- ``native``: a native Responses answer with its upstream ids replaced by Relay's.
"""
