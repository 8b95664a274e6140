"""grpcio client side of the loopback benchmark; prints the same metric lines as Program.cs.
Usage: bench_client.py STUBS_DIR PORT SECONDS"""
import sys
import time
import threading

sys.path.insert(0, sys.argv[1])
import grpc  # noqa: E402
import interop_pb2 as pb  # noqa: E402
import interop_pb2_grpc as pbg  # noqa: E402

port, seconds = sys.argv[2], float(sys.argv[3])
MIB = 1 << 20
channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.max_receive_message_length", 8 * MIB)])
stub = pbg.TestServiceStub(channel)
stub.EmptyCall(pb.Empty())


def unary_rate(concurrency):
    """Calls per second with `concurrency` calls in flight (futures, so no Python threads block)."""
    done = 0
    lock = threading.RLock()  # grpc may run the callback at once, inside our lock
    cond = threading.Condition(lock)
    stop_at = time.monotonic() + seconds
    in_flight = 0
    start = time.monotonic()

    def on_done(_):
        nonlocal done, in_flight
        with cond:
            done += 1
            in_flight -= 1
            cond.notify()

    with cond:
        while time.monotonic() < stop_at:
            while in_flight < concurrency:
                in_flight += 1
                stub.EmptyCall.future(pb.Empty()).add_done_callback(on_done)
            cond.wait(0.1)
        while in_flight:
            cond.wait(0.1)
    return done / (time.monotonic() - start)


def stream_down():
    t = time.monotonic()
    total = sum(len(m.payload.body) for m in stub.StreamingOutputCall(pb.StreamingOutputCallRequest(count=256, size=MIB)))
    return total / MIB / (time.monotonic() - t)


def stream_up():
    chunk = pb.StreamingInputCallRequest(payload=pb.Payload(body=bytes(MIB)))
    t = time.monotonic()
    r = stub.StreamingInputCall(iter([chunk] * 256))
    return r.aggregated_payload_size / MIB / (time.monotonic() - t)


def seq_rate():
    n = 0
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        stub.EmptyCall(pb.Empty())
        n += 1
    return n / (time.monotonic() - start)


print(f"unary_seq_calls_per_s {seq_rate():.0f}")
print(f"unary_c16_calls_per_s {unary_rate(16):.0f}")
print(f"stream_down_mib_per_s {max(stream_down() for _ in range(3)):.0f}")
print(f"stream_up_mib_per_s {max(stream_up() for _ in range(3)):.0f}")
channel.close()
