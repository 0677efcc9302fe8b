// The official @anthropic-ai/sdk against Relay's Anthropic door, changing only baseURL.
// Reads RELAY_URL (without /v1) and RELAY_KEY (a test-mode key); prints one JSON report.
import Anthropic from "@anthropic-ai/sdk";

const client = new Anthropic({ baseURL: process.env.RELAY_URL, apiKey: process.env.RELAY_KEY, maxRetries: 0 });
const model = "gpt-4o-mini";
const messages = [{ role: "user", content: "Hello from node" }];
const weather = { name: "get_weather", input_schema: { type: "object", properties: { city: { type: "string" } } } };
const report = {};

const created = await client.messages.create({ model, max_tokens: 64, messages });
report.create = { type: created.type, block: created.content[0].type, text: created.content[0].text.length > 0,
  output: created.usage.output_tokens };

let streamed = "";
const stream = client.messages.stream({ model, max_tokens: 64, messages });
stream.on("text", (t) => { streamed += t; });
const final = await stream.finalMessage();
report.stream = { same: final.content[0].text === streamed && streamed.length > 0, stop: final.stop_reason };

const tool = await client.messages.create({ model, max_tokens: 256, messages, tools: [weather] });
const use = tool.content.find((b) => b.type === "tool_use");
const after = await client.messages.create({ model, max_tokens: 64, tools: [weather], messages: [...messages,
  { role: "assistant", content: tool.content },
  { role: "user", content: [{ type: "tool_result", tool_use_id: use.id, content: "18 C" }] }] });
report.tools = { stop: tool.stop_reason, name: use.name, after: after.content[0].type };

const thinking = await client.messages.create({ model, max_tokens: 256, messages,
  thinking: { type: "enabled", budget_tokens: 2048 } });
report.thinking = thinking.content.map((b) => b.type);

try {
  await client.messages.create({ model: "no-such-model", max_tokens: 8, messages });
} catch (err) {
  report.notFound = { cls: err instanceof Anthropic.NotFoundError, status: err.status, type: err.error?.error?.type };
}
try {
  await new Anthropic({ baseURL: process.env.RELAY_URL, apiKey: "rly_test_sk_nope", maxRetries: 0 })
    .messages.create({ model, max_tokens: 8, messages });
} catch (err) {
  report.auth = { cls: err instanceof Anthropic.AuthenticationError, status: err.status };
}
console.log(JSON.stringify(report));
