// Drives the gateway's OpenAI-compatible API with the official OpenAI client for Node (pinned by
// package-lock.json) and prints what it saw as one JSON object on stdout; the C# test
// (tests/Cluster.IntegrationTests/OpenAiApiTests.cs) compares it with the gRPC stream.
// Usage: node client.js '{"baseURL": "http://127.0.0.1:8000/v1", "prompt": "...", "seed": 7, "maxTokens": 24}'
'use strict';
const { OpenAI } = require('openai');

async function main() {
  const args = JSON.parse(process.argv[2]);
  const client = new OpenAI({ baseURL: args.baseURL, apiKey: 'unused', maxRetries: 0, timeout: 60000 });
  const out = {};

  const models = await client.models.list();
  out.models = models.data.map(m => m.id);
  const model = out.models[0];
  const sampling = { model, max_tokens: args.maxTokens, seed: args.seed, temperature: 0.8 };

  const completion = await client.completions.create({ ...sampling, prompt: args.prompt });
  out.completion = { text: completion.choices[0].text, finish_reason: completion.choices[0].finish_reason, usage: completion.usage };

  // Streamed, with the chosen token of each step (logprobs: 0) to compare token by token.
  const stream = await client.completions.create({ ...sampling, prompt: args.prompt, stream: true, stream_options: { include_usage: true }, logprobs: 0 });
  out.stream = { texts: [], tokens: [], finish_reason: null, usage: null };
  for await (const chunk of stream) {
    if (chunk.usage) out.stream.usage = chunk.usage;
    for (const c of chunk.choices) {
      if (c.text) out.stream.texts.push(c.text);
      if (c.logprobs) out.stream.tokens.push(...c.logprobs.tokens);
      if (c.finish_reason) out.stream.finish_reason = c.finish_reason;
    }
  }

  const messages = [{ role: 'system', content: 'Tell a story.' }, { role: 'user', content: args.prompt }];
  const chat = await client.chat.completions.create({ ...sampling, messages });
  out.chat = { content: chat.choices[0].message.content, role: chat.choices[0].message.role, finish_reason: chat.choices[0].finish_reason, session_id: chat.session_id };

  const chatStream = await client.chat.completions.create({ ...sampling, messages, stream: true });
  out.chatStream = { content: '', chunks: 0 };
  for await (const chunk of chatStream) {
    out.chatStream.chunks++;
    for (const c of chunk.choices) out.chatStream.content += c.delta.content || '';
  }

  // n = 2: two choices, each with its index (the test compares them with the gRPC outputs of each index).
  const two = await client.completions.create({ ...sampling, prompt: args.prompt, n: 2 });
  out.nTwo = two.choices.map(c => ({ index: c.index, text: c.text }));

  // Refusals: each must be an APIError with OpenAI's shape, and the server must go on serving.
  const bad = {
    unknownModel: { ...sampling, prompt: args.prompt, model: 'no-such-model' },
    badType: { ...sampling, prompt: args.prompt, temperature: 'hot' },
    outOfRange: { ...sampling, prompt: args.prompt, top_p: 2 },
    negativeMax: { ...sampling, prompt: args.prompt, max_tokens: -1 },
    nZero: { ...sampling, prompt: args.prompt, n: 0 },
    bestOfStreamed: { ...sampling, prompt: args.prompt, best_of: 2, stream: true },
    badPolicy: { ...sampling, prompt: args.prompt, kv_policy: 'nonsense(1)' },
  };
  out.errors = {};
  for (const [name, body] of Object.entries(bad)) {
    try {
      await client.completions.create(body);
      out.errors[name] = { status: 200 };
    } catch (e) {
      if (!(e instanceof OpenAI.APIError)) throw e;
      out.errors[name] = { status: e.status, type: e.type, param: e.param ?? null, message: e.error?.message ?? e.message };
    }
  }
  const after = await client.completions.create({ ...sampling, prompt: args.prompt });
  out.afterErrors = after.choices[0].text;
  process.stdout.write(JSON.stringify(out));
}

main().catch(e => { console.error(e.stack || String(e)); process.exit(1); });
