"""Batch requests: ``POST /batch/calendar/v3`` (Calendar API guide "Send batch requests"),
each part answered as its own API call."""

from __future__ import annotations

import secrets
from email import message_from_string
from email.message import Message
from email.parser import BytesParser
from email.policy import compat32
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlsplit

from ._base import API_PREFIX, Request, Response, StandInState, error_response
from ._errors import ApiError, not_found


class BatchEndpoint(StandInState):
    """Splits a batch into its parts and joins their answers."""

    max_batch: int

    def _batch(self, req: Request) -> Response:
        """``POST /batch/calendar/v3``: multipart/mixed of application/http parts (Calendar API
        guide "Send batch requests"). The outer request's headers apply to every part unless
        the part sets its own; the answer has one application/http part per request, in order,
        each with ``Content-ID: <response-ID>``."""
        content_type = req.headers.get("content-type", "")
        if not content_type.lower().startswith("multipart/mixed"):
            return error_response(ApiError(400, "badRequest", "Batch must be multipart/mixed"))
        message = BytesParser(policy=compat32).parsebytes(
            b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + req.body
        )
        parts = message.get_payload() if message.is_multipart() else []
        if not isinstance(parts, list) or not parts:
            return error_response(ApiError(400, "badRequest", "Empty batch request"))
        if len(parts) > self.max_batch:
            return error_response(
                ApiError(
                    400,
                    "badRequest",
                    f"Too many requests in batch: {len(parts)} (at most {self.max_batch}).",
                )
            )
        outer_headers = {
            k: v
            for k, v in req.headers.items()
            if not k.startswith("content-") and k not in ("host", "connection")
        }
        boundary = "batch_" + secrets.token_hex(12)
        chunks: list[str] = []
        for part in parts:
            assert isinstance(part, Message)  # the parts of a multipart message are messages
            content_id = (part.get("Content-ID") or "").strip()
            inner = self._batch_part(part.get_payload(), outer_headers, req.query)
            reason = HTTPStatus(inner.status).phrase
            lines = [f"HTTP/1.1 {inner.status} {reason}"]
            lines += [f"{k}: {v}" for k, v in inner.headers.items()]
            lines.append(f"Content-Length: {len(inner.body)}")
            response_id = (
                f"<response-{content_id[1:-1]}>"
                if content_id.startswith("<") and content_id.endswith(">")
                else f"response-{content_id}"
            )
            chunks.append(
                f"--{boundary}\r\nContent-Type: application/http\r\n"
                f"Content-ID: {response_id}\r\n\r\n"
                + "\r\n".join(lines)
                + "\r\n\r\n"
                + inner.body.decode("utf-8")
                + "\r\n"
            )
        chunks.append(f"--{boundary}--\r\n")
        return Response(
            200,
            "".join(chunks).encode("utf-8"),
            {"Content-Type": f"multipart/mixed; boundary={boundary}"},
        )

    def _batch_part(
        self, payload: Any, outer_headers: dict[str, str], outer_query: dict[str, list[str]]
    ) -> Response:
        if not isinstance(payload, str) or not payload.strip():
            return error_response(ApiError(400, "badRequest", "Empty batch part"))
        request_line, _, rest = payload.lstrip("\r\n").partition("\n")
        pieces = request_line.strip().split(" ")
        if len(pieces) < 2:
            return error_response(ApiError(400, "badRequest", "Malformed batch part"))
        method, target = pieces[0].upper(), pieces[1]
        inner = message_from_string(rest, policy=compat32)
        headers = dict(outer_headers)
        headers.update({k.lower(): v for k, v in inner.items()})
        body_text = inner.get_payload()
        body = body_text.encode("utf-8") if isinstance(body_text, str) else b""
        if not body.strip():
            body = b""
        split = urlsplit(target)
        query = {k: list(v) for k, v in outer_query.items()}
        query.update(parse_qs(split.query, keep_blank_values=True))
        inner_req = Request(method, split.path, query, headers, body)
        if not split.path.startswith(API_PREFIX):
            return error_response(not_found())
        return self._api_call(inner_req)
