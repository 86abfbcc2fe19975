"""The TopstepX stand-in: REST + SignalR hubs on one aiohttp server (topstepx_api.md).

The app wiring only. REST endpoints: services/sim/rest.py; hubs: services/sim/hubs.py;
fault injection and control (`/sim/...`, loopback, no auth): services/sim/faults.py; the
simulator's state and market tape: services/sim/simulator.py.
"""
from __future__ import annotations

import asyncio

from aiohttp import web

from services.sim.faults import control, state
from services.sim.hubs import hub_ws, negotiate
from services.sim.rest import handle_api
from services.sim.simulator import Simulator

__all__ = ["Simulator", "build_app"]


def build_app(sim: Simulator) -> web.Application:
    app = web.Application(client_max_size=1 << 20)
    app["sim"] = sim
    app.router.add_post("/api/{tail:.*}", handle_api)
    app.router.add_get("/api/Status/ping", lambda r: web.Response(text="pong"))
    app.router.add_post("/hubs/{hub}/negotiate", negotiate)
    app.router.add_get("/hubs/{hub}", hub_ws)
    app.router.add_post("/sim/control/{name}", control)
    app.router.add_get("/sim/state", state)
    app.router.add_post("/sim/state", state)

    async def start_market(app: web.Application) -> None:
        app["market_task"] = asyncio.create_task(sim.run_market())

    async def stop_market(app: web.Application) -> None:
        app["market_task"].cancel()
        for c in list(sim.conns):
            await c.ws.close()

    app.on_startup.append(start_market)
    app.on_shutdown.append(stop_market)
    return app
