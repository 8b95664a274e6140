"""grpcio's server for the interop TestService (protos/test/interop.proto), the real-gRPC peer
our client is tested against. Usage: interop_server.py STUBS_DIR; prints "PORT <n>" once
listening on 127.0.0.1, then "CANCELLED <call-id>" for every call whose client went away.
Exits when stdin closes, so a test that dies cannot leave it running."""
import sys
import threading
import time
from concurrent import futures

sys.path.insert(0, sys.argv[1])
import grpc  # noqa: E402
import interop_pb2 as pb  # noqa: E402
import interop_pb2_grpc as pbg  # noqa: E402

ECHO_INITIAL = "x-grpc-test-echo-initial"
ECHO_TRAILING = "x-grpc-test-echo-trailing-bin"


def body(size, index):
    return bytes((i + index) % 251 for i in range(size)) if size < 4096 else _big(size, index)


def _big(size, index):
    # Same pattern as InteropService.MakeBody, built fast for MiB payloads.
    cycle = bytes(range(251))
    start = index % 251
    rot = cycle[start:] + cycle[:start]
    reps = size // 251 + 1
    return (rot * reps)[:size]


def metadata_of(context):
    return {k: v for k, v in context.invocation_metadata()}


def watch(context):
    """Print CANCELLED <call-id> if the call ends before the handler finished."""
    call_id = metadata_of(context).get("call-id")
    done = {"ok": False}
    if call_id:
        def on_done():
            if not done["ok"]:
                print("CANCELLED", call_id, flush=True)
        context.add_callback(on_done)
    return done


def echo(context):
    md = metadata_of(context)
    if ECHO_INITIAL in md:
        context.send_initial_metadata(((ECHO_INITIAL, md[ECHO_INITIAL]),))
    if ECHO_TRAILING in md:
        context.set_trailing_metadata(((ECHO_TRAILING, md[ECHO_TRAILING]),))


def abort_if_requested(context, status):
    if status is not None and status.code != 0:
        context.set_trailing_metadata(((ECHO_TRAILING, b"\xab\xcd"),))
        context.abort(grpc.StatusCode(_code(status.code)), status.message)


def _code(n):
    for c in grpc.StatusCode:
        if c.value[0] == n:
            return c.value
    raise ValueError(n)


class Service(pbg.TestServiceServicer):
    def EmptyCall(self, request, context):
        return pb.Empty()

    def UnaryCall(self, request, context):
        echo(context)
        done = watch(context)
        deadline = time.monotonic() + request.sleep_ms / 1000.0
        while time.monotonic() < deadline and context.is_active():
            time.sleep(0.01)
        if request.HasField("response_status"):
            abort_if_requested(context, request.response_status)
        done["ok"] = True
        return pb.SimpleResponse(payload=pb.Payload(body=body(request.response_size, 0)),
                                 received_size=len(request.payload.body))

    def StreamingOutputCall(self, request, context):
        echo(context)
        done = watch(context)
        for i in range(request.count):
            if request.interval_ms:
                time.sleep(request.interval_ms / 1000.0)
            if not context.is_active():
                return
            yield pb.StreamingOutputCallResponse(index=i, payload=pb.Payload(body=body(request.size, i)))
        if request.HasField("response_status"):
            abort_if_requested(context, request.response_status)
        done["ok"] = True

    def StreamingInputCall(self, request_iterator, context):
        echo(context)
        total = count = 0
        for r in request_iterator:
            total += len(r.payload.body)
            count += 1
        return pb.StreamingInputCallResponse(aggregated_payload_size=total, message_count=count)


def main():
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16),
                         options=[("grpc.max_receive_message_length", 8 << 20)])
    pbg.add_TestServiceServicer_to_server(Service(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print("PORT", port, flush=True)
    threading.Thread(target=lambda: (sys.stdin.read(), server.stop(0)), daemon=True).start()
    server.wait_for_termination()


if __name__ == "__main__":
    main()
