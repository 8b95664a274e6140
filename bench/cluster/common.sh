# Shared by the cluster benchmarks (sourced, from the repository root): builds llmctl, makes the
# synthetic model when MODEL_DIR lacks one, and starts/awaits `llmctl up`.
dotnet build tools/llmctl -c Release -v q -nologo >/dev/null
llmctl="dotnet tools/llmctl/bin/Release/net10.0/llmctl.dll"
[ -f "$model/config.json" ] || $llmctl synth --preset smollm2-135m --out "$model" --dtype bf16 >/dev/null

# A loopback port nothing listens on now.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Waits (up to 2 minutes) until the `llmctl up` writing to log $1 says it is up.
wait_up() { for _ in $(seq 120); do grep -q "cluster up" "$1" && return 0; sleep 1; done; echo "no cluster up within 2 minutes: $(cat "$1")" >&2; return 1; }
