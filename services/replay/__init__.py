"""Replay: a tick recording -> the feed socket, exactly as the live feed would publish it."""
