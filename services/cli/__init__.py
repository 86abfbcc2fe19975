"""The operator's program, `scalper` (services/cli/commands.py). Not a long-running service:
it talks to the services through their sockets, and runs another service's module
(`python -m ...`) for a job that service owns, so it imports none of their insides."""
