"""A Spin HTTP component written with the Spin Python SDK (spin-sdk 3.x, the
WASI 0.2 world), built by componentize-py (scripts/python-guests). It serves
every route of the test app under one wildcard trigger:

- /hello: 200 `hello from python` with `x-spindle-guest: python`
- /kv: sets, reads back and deletes a key in the `default` store; 200 `ok`,
  or 500 with what went wrong
- /variables?name=NAME: 200 with the value of the component variable NAME
- /outbound?url=URL: fetches URL with the SDK's outbound HTTP; 200 with
  `<status>\\n<body>` of what came back, or 500 with the error
"""

from urllib.parse import parse_qs, urlparse

from spin_sdk import http, key_value, variables
from spin_sdk.http import Request, Response
from spin_sdk.wit.types import Err

TEXT = {"content-type": "text/plain"}


def text(status: int, body: str) -> Response:
    return Response(status, dict(TEXT), body.encode("utf-8"))


def hello() -> Response:
    return Response(
        200,
        {"content-type": "text/plain", "x-spindle-guest": "python"},
        b"hello from python",
    )


def kv() -> Response:
    key = "python-key"
    value = b"python-value"
    try:
        with key_value.open_default() as store:
            store.set(key, value)
            got = store.get(key)
            if got != value:
                return text(500, f"get after set returned {got!r}")
            if not store.exists(key):
                return text(500, "exists after set returned false")
            store.delete(key)
            after = store.get(key)
            if after is not None:
                return text(500, f"get after delete returned {after!r}")
    except Err as err:
        # The key-value interface reports failures as an Err whose value
        # names the error variant.
        return text(500, f"key-value error: {err.value!r}")
    return text(200, "ok")


def variable(query: dict[str, list[str]]) -> Response:
    names = query.get("name")
    if not names:
        return text(400, "missing ?name=")
    try:
        return text(200, variables.get(names[0]))
    except Err as err:
        return text(500, f"variables error: {err.value!r}")


def outbound(query: dict[str, list[str]]) -> Response:
    urls = query.get("url")
    if not urls:
        return text(400, "missing ?url=")
    try:
        response = http.send(Request("GET", urls[0], {}, None))
    except Err as err:
        return text(500, f"outbound error: {err.value!r}")
    body = (response.body or b"").decode("utf-8", errors="replace")
    return text(200, f"{response.status}\n{body}")


class IncomingHandler(http.IncomingHandler):
    def handle_request(self, request: Request) -> Response:
        url = urlparse(request.uri)
        query = parse_qs(url.query)
        if url.path == "/hello":
            return hello()
        if url.path == "/kv":
            return kv()
        if url.path == "/variables":
            return variable(query)
        if url.path == "/outbound":
            return outbound(query)
        return text(404, f"no route {url.path}")
