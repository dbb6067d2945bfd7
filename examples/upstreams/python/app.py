"""A sessiongate upstream in Python.

It verifies the session token with PyJWT (HS256 with the secret it shares
with sessiongate, or EdDSA with the keys sessiongate publishes as a JWKS),
reads the session from the claims, and changes it by answering with
X-Session-Update (a JSON Merge Patch) and X-Session-Action headers.

    pip install "pyjwt[crypto]"
    UPSTREAM_JWT_SECRET=... python3 app.py 3000                    # HS256
    SESSIONGATE_JWKS_URL=http://127.0.0.1:9090/.well-known/jwks.json \\
        python3 app.py 3000                                         # EdDSA

SESSIONGATE_AUDIENCE is the upstream's name in sessiongate's config (default
"app"); SESSIONGATE_ISSUER is forward.issuer (default "sessiongate").
"""

import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import jwt

AUDIENCE = os.environ.get("SESSIONGATE_AUDIENCE", "app")
ISSUER = os.environ.get("SESSIONGATE_ISSUER", "sessiongate")
SECRET = os.environ.get("UPSTREAM_JWT_SECRET")
JWKS_URL = os.environ.get("SESSIONGATE_JWKS_URL")
JWKS = jwt.PyJWKClient(JWKS_URL) if JWKS_URL else None


def verify(token):
    """The token's claims, or an exception if it is not sessiongate's."""
    if JWKS is not None:
        key = JWKS.get_signing_key_from_jwt(token).key
        return jwt.decode(token, key, algorithms=["EdDSA"], audience=AUDIENCE, issuer=ISSUER)
    return jwt.decode(token, SECRET, algorithms=["HS256"], audience=AUDIENCE, issuer=ISSUER)


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        self.serve()

    def do_POST(self):
        self.serve()

    def serve(self):
        token = self.headers.get("X-Session-Token", "")
        try:
            claims = verify(token)
        except Exception as e:  # any failure means: not from sessiongate
            return self.reply(401, {"error": f"invalid session token: {e}"}, [])
        session = claims["session"]
        url = urlsplit(self.path)
        headers = []
        if url.path == "/login":
            user = parse_qs(url.query).get("user", ["guest"])[0]
            # A new session id on login, against session fixation.
            headers = [("X-Session-Update", json.dumps({"user_id": user})), ("X-Session-Action", "cycle")]
        elif url.path == "/count":
            headers = [("X-Session-Update", json.dumps({"count": session.get("count", 0) + 1}))]
        elif url.path == "/logout":
            headers = [("X-Session-Action", "flush")]
        body = {
            "verified": True,
            "alg": jwt.get_unverified_header(token)["alg"],
            "sid": claims.get("sid"),
            "session": session,
        }
        self.reply(200, body, headers)

    def reply(self, status, body, headers):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 3000
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    print(f"listening on 127.0.0.1:{port}", flush=True)
    server.serve_forever()
