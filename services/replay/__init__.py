"""Replay: a tick recording -> the feed socket, exactly as the feed gateway would publish it."""
