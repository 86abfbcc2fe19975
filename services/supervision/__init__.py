"""Supervision: a supervisord event listener that stops crash loops and says so on the bus."""
