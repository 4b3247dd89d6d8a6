"""What a refused write says, read from the response as influxdb-client reads it: a JSON body's
``message``, else the body, else the error headers, else the HTTP reason."""

from __future__ import annotations

import pytest
from urllib3 import HTTPHeaderDict, HTTPResponse

from connectors.influxdb.adapter import _message


def _response(body: bytes, headers: dict[str, str] | None = None, reason: str = "Bad Request") -> HTTPResponse:
    return HTTPResponse(body=body, headers=HTTPHeaderDict(headers or {}), status=400, reason=reason,
                        preload_content=True)


@pytest.mark.parametrize(("response", "said"), [
    (_response(b'{"code":"invalid","message":"unable to parse \'x y\': bad field"}'),
     "unable to parse 'x y': bad field"),
    (_response(b"partial write: field type conflict\n"), "partial write: field type conflict"),
    (_response(b'{"code":"invalid"}'), '{"code":"invalid"}'),  # JSON without a message: the body
    (_response(b"", {"X-Influx-Error": "bucket not found"}), "bucket not found"),
    (_response(b"", {"X-Platform-Error-Code": "unauthorized"}), "unauthorized"),
    (_response(b"", reason="Request Entity Too Large"), "Request Entity Too Large"),
])
def test_the_server_s_own_words_are_kept(response: HTTPResponse, said: str) -> None:
    assert _message(response) == said


def test_a_long_message_is_cut_to_500_characters() -> None:
    assert _message(_response(b"x" * 2000)) == "x" * 500
