"""Feed: TopstepX market hub -> normalized, sanitized ticks on the feed socket, plus a raw recording."""
