"""Where a request goes: catalog route → ordered (provider, credential) candidates, their health and
circuits, and the failover loop that tries them."""
