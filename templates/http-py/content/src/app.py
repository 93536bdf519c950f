"""The {{name}} component: answers every request with a greeting."""

from urllib.parse import urlparse

from spin_sdk import http
from spin_sdk.http import Request, Response


class IncomingHandler(http.IncomingHandler):
    """The component's HTTP export."""

    def handle_request(self, request: Request) -> Response:
        path = urlparse(request.uri).path
        return Response(
            200,
            {"content-type": "text/plain"},
            f"Hello from {{name}}! You asked for {path}\n".encode("utf-8"),
        )
