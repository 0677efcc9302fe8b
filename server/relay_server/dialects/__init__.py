"""Pure translations between public API dialects (no I/O, never mutating their input).

One package per API pair, holding both directions: ``responses`` is OpenAI Responses ↔ OpenAI
chat completions (the pipeline's common form).  Both ``api/`` (the door) and ``providers/`` (a
provider that speaks the dialect natively) may import from here; it imports nothing above it.
"""
