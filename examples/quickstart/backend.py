"""A complete Rainbow backend in the Python standard library.

It accepts every connection, answers message type 1 with an echo (and puts the
sender in channel "echo" via a control header), and logs closes. Run it next to
the gateway (see ../../README.md):

    python3 examples/quickstart/backend.py
"""
import hashlib
import json
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

TOKEN = "qwe123"  # security_token from rainbow.ini


def signed(query):
    """Checks the gateway's signature: sha1 of sorted [token, timestamp, nonce]."""
    q = {k: v[0] for k, v in parse_qs(query).items()}
    try:
        parts = sorted([TOKEN, q["timestamp"], q["nonce"]])
        fresh = abs(time.time() - int(q["timestamp"])) <= 10
    except (KeyError, ValueError):
        return False
    return fresh and hashlib.sha1("".join(parts).encode()).hexdigest() == q.get("signature")


class Hooks(BaseHTTPRequestHandler):
    def reply(self, body, headers=()):
        data = json.dumps(body).encode()
        self.send_response(200)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        url = urlparse(self.path)
        if not signed(url.query):
            return self.reply({"status": "bad signature"}, [("RAINBOWREQUESTINVALID", "60001")])
        identity = self.headers.get("RAINBOWCLIENTIDENTITY", "")
        if url.path == "/rainbow/connect/":
            print("connect", identity[:12], "device", self.headers.get("X-DEVICEID"))
            return self.reply({"status": "success"})
        print("close", identity[:12])
        return self.reply({"status": "success"})

    def do_POST(self):
        url = urlparse(self.path)
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if not signed(url.query):
            return self.reply({"status": "bad signature"}, [("RAINBOWREQUESTINVALID", "60001")])
        msg_type = url.path.rstrip("/").rsplit("/", 1)[-1]
        print("message type", msg_type, body.decode(errors="replace"))
        return self.reply({"echo": body.decode(errors="replace")}, [("RAINBOWCLIENTCHANNEL", "echo")])

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    print("backend on http://127.0.0.1:8000")
    ThreadingHTTPServer(("127.0.0.1", 8000), Hooks).serve_forever()
