"""Local TopstepX stand-in: REST + SignalR hubs + matching engine fed by recorded ticks."""
