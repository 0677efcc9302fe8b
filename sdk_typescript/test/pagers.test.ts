/** RelayClient.paginate: lazy page walks over List* RPCs, against an in-memory Relay. */
import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { Code, createRouterTransport } from "@connectrpc/connect";

import { RelayClient } from "../src/client.js";
import { ServiceUnavailableError } from "../src/errors.js";
import { ApiKeyService, type ApiKey, type ListApiKeysRequest } from "../src/gen/relay/admin/v1/api_keys_pb.js";
import { ModelCatalogService } from "../src/gen/relay/admin/v1/catalog_pb.js";
import * as admin from "../src/gen/relay/admin/v1/index.js";
import { InferenceService } from "../src/gen/relay/v1/inference_service_pb.js";
import { itemsField, paginate } from "../src/pagers.js";
import { relayShapedError } from "./support.js";

// Three pages of keys: "" → k1,k2 (next "p2"), "p2" → k3,k4 ("p3"), "p3" → k5 ("").
const PAGES: Record<string, { ids: string[]; next: string }> = {
  "": { ids: ["k1", "k2"], next: "p2" },
  p2: { ids: ["k3", "k4"], next: "p3" },
  p3: { ids: ["k5"], next: "" },
};

function fakeRelay(pages: Record<string, { ids: string[]; next: string }> = PAGES, failOn?: string) {
  const requests: ListApiKeysRequest[] = [];
  const transport = createRouterTransport(({ service }) => {
    service(ApiKeyService, {
      listApiKeys(req) {
        requests.push(req);
        if (req.pageToken === failOn) {
          throw relayShapedError({ code: Code.Unavailable, reason: "NO_PROVIDER_AVAILABLE", httpStatus: "503" });
        }
        const page = pages[req.pageToken];
        if (page === undefined) {
          throw relayShapedError({ code: Code.InvalidArgument, reason: "INVALID_REQUEST", httpStatus: "400" });
        }
        return { apiKeys: page.ids.map((id) => ({ id, tenantId: req.tenantId })), nextPageToken: page.next };
      },
    });
  });
  const client = new RelayClient({ target: "unused:1", adminToken: "admin", transport, maxRetries: 0 });
  return { client, requests };
}

async function take<T>(iterable: AsyncIterable<T>, n: number): Promise<T[]> {
  const out: T[] = [];
  if (n <= 0) {
    return out;
  }
  for await (const item of iterable) {
    out.push(item);
    if (out.length >= n) {
      break;
    }
  }
  return out;
}

describe("RelayClient.paginate", () => {
  it("fetches nothing until iterated, then only the pages the loop reaches", async () => {
    const { client, requests } = fakeRelay();
    const keys = client.paginate(client.apiKeys.listApiKeys, { tenantId: "ten_1", pageSize: 2 });
    assert.equal(requests.length, 0);
    const first: ApiKey[] = await take(keys, 1); // typed: the items of the page's repeated field
    assert.deepEqual(first.map((k) => k.id), ["k1"]);
    assert.equal(requests.length, 1);
    assert.deepEqual((await take(keys, 2)).map((k) => k.id), ["k1", "k2"]);
    assert.equal(requests.length, 2, "the second page is not fetched before the loop needs it");
    assert.deepEqual((await take(keys, 3)).map((k) => k.id), ["k1", "k2", "k3"]);
    assert.equal(requests.length, 4, "each iteration walks from the first page again");
  });

  it("walks every page to the empty next token, forwarding the request's fields", async () => {
    const { client, requests } = fakeRelay();
    const ids = (await take(client.paginate(client.apiKeys.listApiKeys, { tenantId: "ten_1", pageSize: 2 }), 100)).map((k) => k.id);
    assert.deepEqual(ids, ["k1", "k2", "k3", "k4", "k5"]);
    assert.deepEqual(requests.map((r) => r.pageToken), ["", "p2", "p3"]);
    assert.ok(requests.every((r) => r.tenantId === "ten_1" && r.pageSize === 2));
  });

  it("gives the raw pages, and starts from the request's pageToken", async () => {
    const { client, requests } = fakeRelay();
    const pages = await take(client.paginate(client.apiKeys.listApiKeys, { pageToken: "p2" }).pages(), 100);
    assert.deepEqual(pages.map((p) => [p.apiKeys.length, p.nextPageToken]), [[2, "p3"], [1, ""]]);
    assert.deepEqual(requests.map((r) => r.pageToken), ["p2", "p3"]);
  });

  it("goes past empty pages that still have a next token", async () => {
    const { client } = fakeRelay({ "": { ids: [], next: "p2" }, p2: { ids: ["k9"], next: "" } });
    assert.deepEqual((await take(client.paginate(client.apiKeys.listApiKeys, {}), 10)).map((k) => k.id), ["k9"]);
  });

  it("stops when the server repeats a page token instead of looping forever", async () => {
    const { client, requests } = fakeRelay({ "": { ids: ["k1"], next: "p2" }, p2: { ids: ["k2"], next: "p2" } });
    await assert.rejects(take(client.paginate(client.apiKeys.listApiKeys, {}), 100), /same page token twice/);
    assert.equal(requests.length, 2);
  });

  it("raises a page's failure as a RelayError after the items already delivered", async () => {
    const { client } = fakeRelay(PAGES, "p2");
    const seen: string[] = [];
    await assert.rejects(async () => {
      for await (const key of client.paginate(client.apiKeys.listApiKeys, {})) {
        seen.push(key.id);
      }
    }, ServiceUnavailableError);
    assert.deepEqual(seen, ["k1", "k2"]);
  });

  it("refuses methods that do not paginate and functions that are not bound RPCs", () => {
    const { client } = fakeRelay();
    const notList = client.inference.createChatCompletion as unknown as typeof client.apiKeys.listApiKeys;
    assert.throws(() => client.paginate(notList, {}), /InferenceService.CreateChatCompletion is not a paginated/);
    const stray = async (_req: object) => ({ apiKeys: [], nextPageToken: "" });
    assert.throws(() => paginate(stray, {}), TypeError);
  });
});

describe("itemsField", () => {
  it("finds every paginated RPC's items field from the descriptors", () => {
    assert.equal(itemsField(ApiKeyService.method.listApiKeys), "apiKeys");
    assert.equal(itemsField(ModelCatalogService.method.listCatalogModels), "models");
    assert.equal(itemsField(ApiKeyService.method.getApiKey), undefined);
    assert.equal(itemsField(InferenceService.method.streamChatCompletion), undefined);
    assert.equal(itemsField(InferenceService.method.createEmbedding), undefined);
  });

  it("covers every admin RPC that takes a page_token, with no list kept by hand", () => {
    const paginated: string[] = [];
    for (const service of Object.values(admin).filter((v) => typeof v === "object" && v !== null && "kind" in v && v.kind === "service")) {
      for (const method of (service as typeof ApiKeyService).methods) {
        if (method.input.fields.some((f) => f.name === "page_token")) {
          assert.ok(itemsField(method), `${method.parent.typeName}.${method.name}`);
          paginated.push(method.name);
        }
      }
    }
    assert.ok(paginated.includes("ListApiKeys") && paginated.includes("ListCatalogModels") && paginated.length >= 6, paginated.join(","));
  });
});
