"""Order gateway: the only process that talks to the broker's order endpoints."""
