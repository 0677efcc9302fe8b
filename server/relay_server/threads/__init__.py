"""Threads: persisted, resumable conversations (``relay.v1.ThreadService``).

The domain layer behind ``api/thread_service.py``: content blocks, cursors,
the event stream of a reply, the background run that produces and persists a
reply, and the operations the servicer calls.  See docs/threads.md.
"""
