"""A Spin 4.0 HTTP component written with the Spin Python SDK 5 (its async
handler; WASI 0.3), built by componentize-py (scripts/python-guests). The
same routes as tests/guests-python/http-app, under one wildcard trigger:

- /hello: 200 `hello from python on spin 4` with `x-spindle-guest: python`
- /kv/set?key=KEY&value=VALUE: sets KEY in the `default` store; 200 `stored`
- /kv/get?key=KEY: 200 with KEY's value from the `default` store, or 404
- /variables?name=NAME: 200 with the value of the component variable NAME
- /outbound?url=URL: fetches URL with the SDK's outbound HTTP; 200 with
  `<status>\\n<body>` of what came back, or 500 with the error

A key-value or variables failure is a 500 naming the error.
"""

from urllib.parse import parse_qs, urlparse

from componentize_py_types import Err
from spin_sdk import http, key_value, variables
from spin_sdk.http import Request, Response

TEXT = {"content-type": "text/plain"}


def text(status: int, body: str) -> Response:
    return Response(status, dict(TEXT), body.encode("utf-8"))


def one(query: dict[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    return values[0] if values else None


def hello() -> Response:
    return Response(
        200,
        {"content-type": "text/plain", "x-spindle-guest": "python"},
        b"hello from python on spin 4",
    )


async def kv_set(query: dict[str, list[str]]) -> Response:
    key, value = one(query, "key"), one(query, "value")
    if key is None or value is None:
        return text(400, "missing ?key= or &value=")
    with await key_value.open_default() as store:
        await store.set(key, value.encode("utf-8"))
    return text(200, "stored")


async def kv_get(query: dict[str, list[str]]) -> Response:
    key = one(query, "key")
    if key is None:
        return text(400, "missing ?key=")
    with await key_value.open_default() as store:
        value = await store.get(key)
    if value is None:
        return text(404, f"no key {key}")
    return text(200, value.decode("utf-8", errors="replace"))


async def variable(query: dict[str, list[str]]) -> Response:
    name = one(query, "name")
    if name is None:
        return text(400, "missing ?name=")
    return text(200, await variables.get(name))


async def outbound(query: dict[str, list[str]]) -> Response:
    url = one(query, "url")
    if url is None:
        return text(400, "missing ?url=")
    try:
        response = await http.send(Request("GET", url, {}, None))
    except Err as err:
        # The outbound interface reports failures as an Err whose value is
        # the wasi:http error-code variant (e.g. ErrorCode_HttpRequestDenied).
        return text(500, f"outbound error: {err.value!r}")
    body = (response.body or b"").decode("utf-8", errors="replace")
    return text(200, f"{response.status}\n{body}")


class HttpHandler(http.Handler):
    async def handle_request(self, request: Request) -> Response:
        url = urlparse(request.uri)
        query = parse_qs(url.query)
        try:
            if url.path == "/hello":
                return hello()
            if url.path == "/kv/set":
                return await kv_set(query)
            if url.path == "/kv/get":
                return await kv_get(query)
            if url.path == "/variables":
                return await variable(query)
            if url.path == "/outbound":
                return await outbound(query)
        except Err as err:
            # Key-value and variables report failures as an Err whose value
            # names the error variant.
            return text(500, f"{url.path} error: {err.value!r}")
        return text(404, f"no route {url.path}")
