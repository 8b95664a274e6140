// grpc-js client running one interop case against a TestService server (ours in the tests).
// Usage: node client.js PROTO_PATH PORT CASE [CALL_ID]. Prints "PASS <case>" and exits 0 on
// success; a failed check exits non-zero with the reason on stderr.
'use strict';
const assert = require('node:assert/strict');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const [protoPath, port, testCase, callId = ''] = process.argv.slice(2);
const MIB = 1 << 20;
const SPECIAL = '\t\ntest with whitespace\r\nand Unicode BMP \u263A and non-BMP \u{1F608}\t\n';

const def = protoLoader.loadSync(protoPath, { keepCase: true, longs: Number, defaults: true });
const TestService = grpc.loadPackageDefinition(def).cluster.interop.TestService;
const compress = testCase === 'gzip_unary' ? { 'grpc.default_compression_algorithm': 2 } : {};
const client = new TestService(`127.0.0.1:${port}`, grpc.credentials.createInsecure(),
  { 'grpc.max_receive_message_length': 8 * MIB, ...compress });

const deadline = (ms) => ({ deadline: Date.now() + ms });
const unary = (method, req, md = new grpc.Metadata(), opts = deadline(10000)) =>
  new Promise((resolve, reject) => client[method](req, md, opts, (err, res) => (err ? reject(err) : resolve(res))));

// Collects a server stream: resolves {messages, status, metadata} whatever the status.
function stream(req, md = new grpc.Metadata(), opts = deadline(60000), onData = null) {
  return new Promise((resolve) => {
    const call = client.StreamingOutputCall(req, md, opts);
    const messages = [];
    let metadata = null;
    call.on('metadata', (m) => { metadata = m; });
    call.on('data', (m) => { messages.push(m); if (onData) onData(call, m); });
    call.on('error', () => {});
    call.on('status', (status) => resolve({ messages, status, metadata }));
  });
}

async function expectError(promise, code, details) {
  try {
    await promise;
  } catch (e) {
    assert.equal(e.code, code, `expected ${code}, got ${e.code}: ${e.details}`);
    if (details !== undefined) assert.equal(e.details, details);
    return e;
  }
  throw new Error(`expected status ${code}, the call succeeded`);
}

function checkBody(body, size, index) {
  assert.equal(body.length, size);
  if (size) assert.equal(body[size - 1], (size - 1 + index) % 251);
}

const cases = {
  async empty_unary() { await unary('EmptyCall', {}); },
  async large_unary() {
    const r = await unary('UnaryCall', { response_size: 314159, payload: { body: Buffer.alloc(271828) } });
    checkBody(r.payload.body, 314159, 0);
    assert.equal(Number(r.received_size), 271828);
  },
  async gzip_unary() {
    const r = await unary('UnaryCall', { response_size: 1000, payload: { body: Buffer.alloc(100000) } });
    assert.equal(Number(r.received_size), 100000);
  },
  async custom_metadata() {
    const md = new grpc.Metadata();
    md.set('x-grpc-test-echo-initial', 'test_initial_metadata_value');
    md.set('x-grpc-test-echo-trailing-bin', Buffer.from([0xab, 0xab, 0xab]));
    const { messages, status, metadata } = await stream({ count: 1, size: 10 }, md);
    assert.equal(status.code, grpc.status.OK, status.details);
    assert.equal(messages.length, 1);
    assert.equal(metadata.get('x-grpc-test-echo-initial')[0], 'test_initial_metadata_value');
    assert.deepEqual(status.metadata.get('x-grpc-test-echo-trailing-bin')[0], Buffer.from([0xab, 0xab, 0xab]));
  },
  async status_code_and_message() {
    await expectError(unary('UnaryCall', { response_status: { code: 2, message: 'test status message' } }), grpc.status.UNKNOWN, 'test status message');
  },
  async special_status_message() {
    await expectError(unary('UnaryCall', { response_status: { code: 2, message: SPECIAL } }), grpc.status.UNKNOWN, SPECIAL);
  },
  async server_streaming_10k() { await streamOf(10000, 8); },
  async server_streaming_64mib() { await streamOf(64, MIB); },
  async client_streaming_64mib() {
    const r = await new Promise((resolve, reject) => {
      const call = client.StreamingInputCall(new grpc.Metadata(), deadline(60000), (err, res) => (err ? reject(err) : resolve(res)));
      const chunk = { payload: { body: Buffer.alloc(MIB) } };
      let i = 0;
      const writeSome = () => {
        while (i < 64) { i++; if (!call.write(chunk)) { call.once('drain', writeSome); return; } }
        call.end();
      };
      writeSome();
    });
    assert.equal(Number(r.aggregated_payload_size), 64 * MIB);
    assert.equal(r.message_count, 64);
  },
  async error_before_messages() { await errorInStream(0); },
  async error_after_messages() { await errorInStream(5); },
  async timeout_on_sleeping_server() {
    const t = Date.now();
    await expectError(unary('UnaryCall', { sleep_ms: 20000 }, new grpc.Metadata(), deadline(300)), grpc.status.DEADLINE_EXCEEDED);
    assert.ok(Date.now() - t < 5000);
  },
  async deadline_mid_stream() {
    // 10 s of stream: 4 s is mid-stream even on a loaded machine (500 ms saw no message at load 17, 2 s
    // none while a chaos run shared the two cores).
    const { messages, status } = await stream({ count: 1000, size: 8, interval_ms: 10 }, new grpc.Metadata(), deadline(4000));
    assert.equal(status.code, grpc.status.DEADLINE_EXCEEDED);
    assert.ok(messages.length >= 1 && messages.length < 1000, `${messages.length} messages`);
  },
  async cancel_after_first_response() {
    const md = new grpc.Metadata();
    md.set('call-id', callId);
    const { messages, status } = await stream({ count: 10000, size: 8, interval_ms: 10 }, md, deadline(60000), (call) => call.cancel());
    assert.equal(status.code, grpc.status.CANCELLED);
    assert.ok(messages.length >= 1 && messages.length < 10000);
  },
  async unimplemented_method() { await expectError(unary('UnimplementedCall', {}), grpc.status.UNIMPLEMENTED); },
  // Over the 16 MiB our servers accept (GrpcChannels.MaxMessageBytes, as ServiceHost sets it).
  async oversize_request() {
    await expectError(unary('UnaryCall', { payload: { body: Buffer.alloc(17 * MIB) } }), grpc.status.RESOURCE_EXHAUSTED);
  },
};

async function streamOf(count, size) {
  const { messages, status } = await stream({ count, size });
  assert.equal(status.code, grpc.status.OK, status.details);
  assert.equal(messages.length, count);
  messages.forEach((m, i) => { assert.equal(m.index, i); checkBody(m.payload.body, size, i); });
}

async function errorInStream(before) {
  const { messages, status } = await stream({ count: before, size: 16, response_status: { code: 9, message: 'stop here' } }, new grpc.Metadata(), deadline(10000));
  assert.equal(status.code, grpc.status.FAILED_PRECONDITION);
  assert.equal(status.details, 'stop here');
  assert.equal(messages.length, before);
  assert.deepEqual(status.metadata.get('x-grpc-test-echo-trailing-bin')[0], Buffer.from([0xab, 0xcd]));
}

(async () => {
  const run = cases[testCase];
  if (!run) throw new Error(`unknown case ${testCase}`);
  await run();
  console.log(`PASS ${testCase}`);
  client.close();
})().catch((e) => { console.error(e && e.stack ? e.stack : e); process.exit(1); });
