"""Pure helpers over OpenAI-shaped request and response text: token counting, chunk assembly and
replay, response-cache keys.  No I/O; imports only ``domain``."""
