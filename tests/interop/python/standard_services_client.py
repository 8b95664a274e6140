"""grpcio's client asking a server for the standard services every cluster service offers: the service
list through server reflection (grpc.reflection.v1alpha) and the grpc.health.v1 Check of the server as a
whole. Usage: standard_services_client.py STUBS_DIR PORT. Prints "SERVICE <name>" per listed service and
"HEALTH <status name>"; the test asserts on them. Any failed call raises (non-zero exit)."""
import sys

sys.path.insert(0, sys.argv[1])
import grpc  # noqa: E402
import health_pb2  # noqa: E402
import health_pb2_grpc  # noqa: E402
import reflection_pb2  # noqa: E402
import reflection_pb2_grpc  # noqa: E402


def main():
    with grpc.insecure_channel(f"127.0.0.1:{sys.argv[2]}") as channel:
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        responses = list(reflection.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="*")]), timeout=10))
        assert len(responses) == 1, responses
        assert responses[0].WhichOneof("message_response") == "list_services_response", responses[0]
        for service in responses[0].list_services_response.service:
            print("SERVICE", service.name)
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
        print("HEALTH", health_pb2.HealthCheckResponse.ServingStatus.Name(health.status), flush=True)


if __name__ == "__main__":
    main()
