"""One server interceptor for every service: status codes and metrics.

- Domain errors (services.runtime.errors) become their gRPC status with the
  message unchanged; any other exception becomes INTERNAL with an error id that is
  logged with the traceback (no stack trace ever reaches the client).
- A request that cannot be decoded gets INVALID_ARGUMENT (gRPC's default would be
  INTERNAL): the deserializer is wrapped so decoding errors reach the handler.
- Every call is counted and timed by service, method and code.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from services.runtime.errors import ServiceError
from services.runtime.logs import fields
from services.runtime.metrics import GRPC_HANDLED, GRPC_LATENCY, GRPC_STARTED

log = logging.getLogger("prettyspace.grpc")


class _Undecodable:
    """Stands in for a request whose bytes did not parse."""

    def __init__(self, error: str) -> None:
        self.error = error


def _split(full_method: str) -> tuple[str, str]:
    _, _, rest = full_method.partition("/")
    service, _, method = rest.partition("/")
    return service, method


def _wrap_deserializer(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None

    def deserialize(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception as exc:
            return _Undecodable(f"{type(exc).__name__}: {exc}")

    return deserialize


class _Call:
    """Bookkeeping for one RPC: the code it ended with, metrics, error mapping."""

    def __init__(self, service: str, method: str, rpc_type: str) -> None:
        self.labels = (service, method, rpc_type)
        self.method = f"/{service}/{method}"
        self.start = time.perf_counter()
        GRPC_STARTED.labels(*self.labels).inc()

    def check_request(self, request: Any, context: grpc.ServicerContext) -> None:
        if isinstance(request, _Undecodable):
            self.fail(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                f"request to {self.method} could not be decoded ({request.error}); "
                "send the message type the API defines",
            )

    def fail(self, context: grpc.ServicerContext, code: grpc.StatusCode, message: str) -> None:
        self.finish(code)
        context.abort(code, message)

    def handle_exception(self, exc: BaseException, context: grpc.ServicerContext) -> None:
        """Turn an exception from a handler into a status; always raises."""
        if isinstance(exc, ServiceError):
            self.fail(context, exc.code, str(exc))
        code = context.code() if hasattr(context, "code") else None
        if code not in (None, grpc.StatusCode.OK):
            # The handler already aborted with a status of its own.
            self.finish(code)
            raise exc
        if not context.is_active():
            self.finish(grpc.StatusCode.CANCELLED)
            raise exc
        error_id = uuid.uuid4().hex[:12]
        log.error(
            "unhandled error in %s", self.method, exc_info=exc, extra=fields(method=self.method, error_id=error_id)
        )
        self.fail(context, grpc.StatusCode.INTERNAL, f"internal error {error_id} in {self.method}; see the service log")

    def finish(self, code: grpc.StatusCode) -> None:
        if self.start < 0:
            return  # already recorded
        GRPC_HANDLED.labels(*self.labels, code.name).inc()
        GRPC_LATENCY.labels(*self.labels).observe(time.perf_counter() - self.start)
        self.start = -1.0

    def finish_ok(self, context: grpc.ServicerContext) -> None:
        code = context.code() if hasattr(context, "code") else None
        self.finish(code or grpc.StatusCode.OK)


class ServiceInterceptor(grpc.ServerInterceptor):
    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        service, method = _split(handler_call_details.method)
        deserializer = _wrap_deserializer(handler.request_deserializer)
        serializer = handler.response_serializer

        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                _unary(handler.unary_unary, service, method, "unary"), deserializer, serializer
            )
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                _streaming(handler.unary_stream, service, method, "server_stream"), deserializer, serializer
            )
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                _unary(handler.stream_unary, service, method, "client_stream"), deserializer, serializer
            )
        return grpc.stream_stream_rpc_method_handler(
            _streaming(handler.stream_stream, service, method, "bidi_stream"), deserializer, serializer
        )


def _unary(behaviour: Callable[..., Any], service: str, method: str, rpc_type: str) -> Callable[..., Any]:
    def wrapped(request: Any, context: grpc.ServicerContext) -> Any:
        call = _Call(service, method, rpc_type)
        if rpc_type == "unary":
            call.check_request(request, context)
        try:
            response = behaviour(request, context)
        except Exception as exc:
            call.handle_exception(exc, context)
            raise  # unreachable: handle_exception always raises
        call.finish_ok(context)
        return response

    return wrapped


def _streaming(behaviour: Callable[..., Iterator[Any]], service: str, method: str, rpc_type: str) -> Callable[..., Any]:
    def wrapped(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        call = _Call(service, method, rpc_type)
        if rpc_type == "server_stream":
            call.check_request(request, context)
        try:
            yield from behaviour(request, context)
        except GeneratorExit:
            call.finish(grpc.StatusCode.CANCELLED)
            raise
        except Exception as exc:
            call.handle_exception(exc, context)
            raise
        call.finish_ok(context)

    return wrapped
