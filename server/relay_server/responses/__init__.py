"""The Responses API's stored state (service.py); the door is api/responses_service.py."""
