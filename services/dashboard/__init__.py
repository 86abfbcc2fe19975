"""The live dashboard: a read-only bus subscriber that serves one page on loopback."""
