"""OIDC JWTs on the records API, verified against a JWKS served over a real socket."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import jwt
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa
from records_helpers import make_settings

from voxpipe.server.app import create_app
from voxpipe.server.run import running_server
from voxpipe.state.shared import close_shared_stores

ROOT = Path(__file__).resolve().parents[2]
ECHO_BOT = ROOT / "bots" / "echo.py"


def token(key: Any, kid: str = "k1", **claims: Any) -> str:
    body = {"sub": "alice", "exp": int(time.time()) + 300, "aud": "voxpipe-records", **claims}
    return jwt.encode(body, key, algorithm="RS256", headers={"kid": kid})


async def test_jwts_from_the_identity_provider_get_their_role(tmp_path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    jwk.update(kid="k1", use="sig", alg="RS256")

    async def jwks(_request: web.Request) -> web.Response:
        return web.json_response({"keys": [jwk]})

    idp = web.Application()
    idp.router.add_get("/jwks", jwks)
    runner = web.AppRunner(idp)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    s = make_settings(
        tmp_path,
        records_jwks_url=f"http://127.0.0.1:{port}/jwks",
        records_jwt_audience="voxpipe-records",
        records_jwt_role_claim="voxpipe_roles",
    )
    app = create_app(ECHO_BOT, s, batched_vad=None)
    try:
        async with running_server(app, s) as srv, httpx.AsyncClient(base_url=srv.url) as http:

            async def status(bearer: str) -> int:
                r = await http.get("/api/audit", headers={"authorization": f"Bearer {bearer}"})
                return r.status_code

            assert await status(token(key, voxpipe_roles=["auditor"])) == 200
            assert await status(token(key, voxpipe_roles="agent")) == 403
            assert await status(token(key)) == 403  # no role claim: authenticated, no rights
            assert await status(token(other, voxpipe_roles="admin")) == 401  # not the IdP's key
            assert await status(token(key, voxpipe_roles="admin", aud="elsewhere")) == 401
            assert await status(token(key, voxpipe_roles="admin", exp=int(time.time()) - 60)) == 401
            r = await http.get(
                "/api/audit",
                headers={"authorization": f"Bearer {token(key, voxpipe_roles='admin')}"},
            )
            actors = {(e["actor"], e["role"], e["outcome"]) for e in r.json()["entries"]}
            assert ("jwt:alice", "auditor", "ok") in actors
            assert ("jwt:alice", "agent", "denied_role") in actors
    finally:
        await runner.cleanup()
        await close_shared_stores()
