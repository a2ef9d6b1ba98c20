"""A terminal chat client: ``python chat_client.py NAME [--gateway ws://localhost:1984]``.

Type a line and press Enter to say it; Ctrl-D (or Ctrl-C) leaves.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import rainbow
from rainbow import Client


def show(msg_type: int, data: Any) -> None:
    """Prints what the room broadcasts (runs on the client's callback thread)."""
    if msg_type == 1001:
        print(f"* {data['name']} entered the room, welcome!")
    elif msg_type == 1002:
        print(f"<{data['name']}> {data['message']}")
    elif msg_type == 1004:
        print(f"* {data['name']} left")
    else:
        print(f"? type {msg_type}: {data}")
    sys.stdout.flush()


class Chat:
    def __init__(self, gateway: str, name: str) -> None:
        self.name = name
        self.client = Client(gateway, os="terminal", on_message=show, on_connect=self.on_connect, connect=False)

    def on_connect(self) -> None:
        # Every (re)connect is a new connection for the gateway: (re)join the room.
        self.client.send_async(0, {"message": self.name}, qos=1, callback=self.joined)

    def joined(self, *result: Any) -> None:
        if len(result) == 1:  # the send failed
            print(f"! could not join: {result[0]}", file=sys.stderr)
        elif result[1].get("status") != "ok":
            print(f"! could not join: {result[1]}", file=sys.stderr)

    def run(self) -> int:
        try:
            self.client.connect()
        except rainbow.ConnectionRefused as exc:
            print(f"the gateway refused us: {exc}", file=sys.stderr)
            return 1
        with self.client:
            for line in sys.stdin:
                if not line.strip():
                    continue
                try:
                    _, reply = self.client.send(1, {"message": line.rstrip("\n")}, qos=1)
                except rainbow.RainbowError as exc:
                    print(f"! not sent: {exc}", file=sys.stderr)
                    continue
                if reply.get("status") != "ok":
                    print(f"! {reply.get('msg')}", file=sys.stderr)
        return 0


def main() -> int:
    parser = argparse.ArgumentParser(description="Rainbow chat room, terminal client")
    parser.add_argument("name")
    parser.add_argument("--gateway", default="ws://localhost:1984")
    args = parser.parse_args()
    return Chat(args.gateway, args.name).run()


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(0)
