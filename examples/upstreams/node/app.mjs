// A sessiongate upstream in Node.js.
//
// It verifies the session token with jose (HS256 with the secret it shares
// with sessiongate, or EdDSA with the keys sessiongate publishes as a JWKS),
// reads the session from the claims, and changes it by answering with
// X-Session-Update (a JSON Merge Patch) and X-Session-Action headers.
//
//   npm install
//   UPSTREAM_JWT_SECRET=... node app.mjs 3000                                          # HS256
//   SESSIONGATE_JWKS_URL=http://127.0.0.1:9090/.well-known/jwks.json node app.mjs 3000 # EdDSA
import http from "node:http";
import * as jose from "jose";

const AUDIENCE = process.env.SESSIONGATE_AUDIENCE ?? "app";
const ISSUER = process.env.SESSIONGATE_ISSUER ?? "sessiongate";
const JWKS_URL = process.env.SESSIONGATE_JWKS_URL;
const key = JWKS_URL
  ? jose.createRemoteJWKSet(new URL(JWKS_URL))
  : new TextEncoder().encode(process.env.UPSTREAM_JWT_SECRET ?? "");
const algorithms = JWKS_URL ? ["EdDSA"] : ["HS256"];

http
  .createServer(async (req, res) => {
    let verified;
    try {
      verified = await jose.jwtVerify(req.headers["x-session-token"] ?? "", key, {
        audience: AUDIENCE,
        issuer: ISSUER,
        algorithms,
      });
    } catch (e) {
      res.writeHead(401, { "content-type": "application/json" });
      return res.end(JSON.stringify({ error: `invalid session token: ${e.message}` }));
    }
    const { payload: claims, protectedHeader } = verified;
    const session = claims.session;
    const url = new URL(req.url, "http://upstream");
    const headers = { "content-type": "application/json" };
    if (url.pathname === "/login") {
      // A new session id on login, against session fixation.
      headers["X-Session-Update"] = JSON.stringify({ user_id: url.searchParams.get("user") ?? "guest" });
      headers["X-Session-Action"] = "cycle";
    } else if (url.pathname === "/count") {
      headers["X-Session-Update"] = JSON.stringify({ count: (session.count ?? 0) + 1 });
    } else if (url.pathname === "/logout") {
      headers["X-Session-Action"] = "flush";
    }
    res.writeHead(200, headers);
    res.end(JSON.stringify({ verified: true, alg: protectedHeader.alg, sid: claims.sid ?? null, session }));
  })
  .listen(Number(process.argv[2] ?? 3000), "127.0.0.1", () => console.log(`listening on 127.0.0.1:${process.argv[2] ?? 3000}`));
