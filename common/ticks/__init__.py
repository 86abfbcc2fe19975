"""Market-hub events -> clean ticks: the one path shared by the live feed, replay and the
simulator's tape (normalize -> sanitize -> publish)."""
