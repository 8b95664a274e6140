"""grpcio's client running one interop case against a TestService server (ours in the tests).
Usage: interop_client.py STUBS_DIR PORT CASE [CALL_ID]. Exit 0 and "PASS <case>" on success;
any failed check raises (non-zero exit, traceback on stderr)."""
import sys
import time

sys.path.insert(0, sys.argv[1])
import grpc  # noqa: E402
import interop_pb2 as pb  # noqa: E402
import interop_pb2_grpc as pbg  # noqa: E402

SPECIAL = "\t\ntest with whitespace\r\nand Unicode BMP \u263A and non-BMP \U0001F608\t\n"
MIB = 1 << 20


def expect_error(fn, code, details=None):
    try:
        fn()
    except grpc.RpcError as e:
        assert e.code() == code, f"expected {code}, got {e.code()}: {e.details()}"
        if details is not None:
            assert e.details() == details, f"details {e.details()!r} != {details!r}"
        return e
    raise AssertionError(f"expected {code}, the call succeeded")


def check_body(b, size, index):
    assert len(b) == size, (len(b), size)
    if size:
        assert b[-1] == (size - 1 + index) % 251


def run(stub, case, call_id):
    if case == "empty_unary":
        assert isinstance(stub.EmptyCall(pb.Empty(), timeout=10), pb.Empty)
    elif case == "large_unary":
        r = stub.UnaryCall(pb.SimpleRequest(response_size=314159, payload=pb.Payload(body=bytes(271828))), timeout=10)
        check_body(r.payload.body, 314159, 0)
        assert r.received_size == 271828
    elif case == "gzip_unary":
        r = stub.UnaryCall(pb.SimpleRequest(response_size=1000, payload=pb.Payload(body=bytes(100000))),
                           timeout=10, compression=grpc.Compression.Gzip)
        assert r.received_size == 100000 and len(r.payload.body) == 1000
    elif case == "custom_metadata":
        md = (("x-grpc-test-echo-initial", "test_initial_metadata_value"),
              ("x-grpc-test-echo-trailing-bin", b"\xab\xab\xab"))
        call = stub.StreamingOutputCall(pb.StreamingOutputCallRequest(count=1, size=10), metadata=md, timeout=10)
        assert len(list(call)) == 1
        assert dict(call.initial_metadata())["x-grpc-test-echo-initial"] == "test_initial_metadata_value"
        assert dict(call.trailing_metadata())["x-grpc-test-echo-trailing-bin"] == b"\xab\xab\xab"
    elif case in ("status_code_and_message", "special_status_message"):
        msg = "test status message" if case == "status_code_and_message" else SPECIAL
        req = pb.SimpleRequest(response_status=pb.EchoStatus(code=2, message=msg))
        expect_error(lambda: stub.UnaryCall(req, timeout=10), grpc.StatusCode.UNKNOWN, msg)
    elif case in ("server_streaming_10k", "server_streaming_64mib"):
        count, size = (10000, 8) if case == "server_streaming_10k" else (64, MIB)
        n = 0
        for m in stub.StreamingOutputCall(pb.StreamingOutputCallRequest(count=count, size=size), timeout=60):
            assert m.index == n
            check_body(m.payload.body, size, n)
            n += 1
        assert n == count, n
    elif case == "client_streaming_64mib":
        chunk = pb.StreamingInputCallRequest(payload=pb.Payload(body=bytes(MIB)))
        r = stub.StreamingInputCall(iter([chunk] * 64), timeout=60)
        assert r.aggregated_payload_size == 64 * MIB and r.message_count == 64
    elif case in ("error_before_messages", "error_after_messages"):
        before = 0 if case == "error_before_messages" else 5
        req = pb.StreamingOutputCallRequest(count=before, size=16, response_status=pb.EchoStatus(code=9, message="stop here"))
        call = stub.StreamingOutputCall(req, timeout=10)
        got = []
        e = expect_error(lambda: got.extend(call), grpc.StatusCode.FAILED_PRECONDITION, "stop here")
        assert len(got) == before, len(got)
        assert dict(e.trailing_metadata())["x-grpc-test-echo-trailing-bin"] == b"\xab\xcd"
    elif case == "timeout_on_sleeping_server":
        t = time.monotonic()
        expect_error(lambda: stub.UnaryCall(pb.SimpleRequest(sleep_ms=20000), timeout=0.3), grpc.StatusCode.DEADLINE_EXCEEDED)
        assert time.monotonic() - t < 5
    elif case == "deadline_mid_stream":
        got = []
        call = stub.StreamingOutputCall(pb.StreamingOutputCallRequest(count=1000, size=8, interval_ms=10), timeout=2.0)  # 10 s of stream: 2 s is mid-stream even on a loaded machine
        expect_error(lambda: got.extend(call), grpc.StatusCode.DEADLINE_EXCEEDED)
        assert 1 <= len(got) < 1000, len(got)
    elif case == "cancel_after_first_response":
        call = stub.StreamingOutputCall(pb.StreamingOutputCallRequest(count=10000, size=8, interval_ms=10),
                                        metadata=(("call-id", call_id),), timeout=60)
        next(call)
        call.cancel()
        expect_error(lambda: list(call), grpc.StatusCode.CANCELLED)
    elif case == "unimplemented_method":
        expect_error(lambda: stub.UnimplementedCall(pb.Empty(), timeout=10), grpc.StatusCode.UNIMPLEMENTED)
    elif case == "oversize_request":
        # Over the 16 MiB our servers accept (GrpcChannels.MaxMessageBytes, as ServiceHost sets it).
        req = pb.SimpleRequest(payload=pb.Payload(body=bytes(17 * MIB)))
        expect_error(lambda: stub.UnaryCall(req, timeout=10), grpc.StatusCode.RESOURCE_EXHAUSTED)
    else:
        raise SystemExit(f"unknown case {case}")


def main():
    port, case = sys.argv[2], sys.argv[3]
    call_id = sys.argv[4] if len(sys.argv) > 4 else ""
    options = [("grpc.max_receive_message_length", 8 << 20)]
    with grpc.insecure_channel(f"127.0.0.1:{port}", options=options) as channel:
        run(pbg.TestServiceStub(channel), case, call_id)
    print("PASS", case, flush=True)


if __name__ == "__main__":
    main()
