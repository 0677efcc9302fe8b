/**
 * Lazy walks over Relay's paginated `List*` RPCs (AIP-158: `page_token` in,
 * `next_page_token` out), the TypeScript twin of the Python SDK's pagers.
 *
 * Which RPCs paginate, and which response field holds the items, is read from
 * the service descriptors, so a new `List*` RPC needs no change here.  A pager
 * fetches a page only when the caller has consumed the previous one and stops
 * at the first empty `nextPageToken`; each fresh iteration walks from the
 * starting token again.  Every page is an ordinary call of the bound method,
 * so it gets Relay's credentials, deadline, retries and error mapping.
 */
import { ScalarType, type DescField, type DescMethod } from "@bufbuild/protobuf";
import type { CallOptions } from "@connectrpc/connect";

import { methodDescriptor } from "./services.js";

/** A response of a paginated RPC. */
export interface PageResponse {
  nextPageToken: string;
}

/** A request of a paginated RPC. */
export interface PageRequest {
  pageToken?: string;
}

/** The item type of a page: the element type of its one repeated field. */
export type PageItem<Page> = {
  [K in keyof Page]-?: K extends `$${string}` ? never : Page[K] extends readonly (infer Item)[] ? Item : never;
}[keyof Page];

/** A bound unary `List*` method of a RelayClient service. */
export type ListMethod<Req extends PageRequest, Page extends PageResponse> = (request: Req, options?: CallOptions) => Promise<Page>;

/** `for await` over every item; `pages()` gives the raw page responses instead. */
export class Pager<Item, Page extends PageResponse> implements AsyncIterable<Item> {
  constructor(
    private readonly fetch: (pageToken: string) => Promise<Page>,
    private readonly itemsField: string,
    private readonly firstToken = "",
  ) {}

  /** Every page, fetched only when the loop asks for it. */
  async *pages(): AsyncGenerator<Page, void, undefined> {
    let token = this.firstToken;
    for (;;) {
      const page = await this.fetch(token);
      yield page;
      const next = page.nextPageToken;
      if (next !== "" && next === token) {
        // A server bug would otherwise loop forever on the same page.
        throw new Error(`the server returned the same page token twice (${JSON.stringify(token)})`);
      }
      if (next === "") {
        return;
      }
      token = next;
    }
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<Item, void, undefined> {
    for await (const page of this.pages()) {
      yield* (page as unknown as Record<string, Item[]>)[this.itemsField] ?? [];
    }
  }
}

/** The response field holding a paginated RPC's items, or undefined when `method` does not paginate. */
export function itemsField(method: DescMethod): string | undefined {
  if (method.methodKind !== "unary") {
    return undefined;
  }
  const isString = (f: DescField | undefined): boolean => f?.fieldKind === "scalar" && f.scalar === ScalarType.STRING;
  const token = method.input.fields.find((f) => f.name === "page_token");
  const next = method.output.fields.find((f) => f.name === "next_page_token");
  const lists = method.output.fields.filter((f) => f.fieldKind === "list");
  const items = lists[0];
  return isString(token) && isString(next) && lists.length === 1 && items !== undefined ? items.localName : undefined;
}

/**
 * A lazy pager over `list` (a `List*` method of a RelayClient service), starting
 * from `request` (its `pageToken`, if any); `options` apply to each page's call.
 */
export function paginate<Req extends PageRequest, Page extends PageResponse>(
  list: ListMethod<Req, Page>,
  request: Req,
  options?: CallOptions,
): Pager<PageItem<Page>, Page> {
  const method = methodDescriptor(list);
  const field = method === undefined ? undefined : itemsField(method);
  if (method === undefined || field === undefined) {
    const name = method === undefined ? "this function" : `${method.parent.typeName}.${method.name}`;
    throw new TypeError(`${name} is not a paginated List* method of a RelayClient service`);
  }
  return new Pager((pageToken) => list({ ...request, pageToken }, options), field, request.pageToken ?? "");
}
