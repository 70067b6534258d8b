// Runs inside the browser page (bundled by esbuild): calls CatalogService on the mesh at
// ?target=, a different origin, over grpc-web with connect-web, and leaves what it saw in
// window.__result for the runner. Descriptors come from protoc (no generated stubs): the
// client is built from the real .proto contract at run time.
import { createFileRegistry, fromBinary } from "@bufbuild/protobuf";
import { FileDescriptorSetSchema } from "@bufbuild/protobuf/wkt";
import { ConnectError, Code, createClient } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";

async function outcome(call) {
  try {
    return { ok: true, value: await call() };
  } catch (error) {
    const e = ConnectError.from(error);
    return { ok: false, code: Code[e.code], message: e.rawMessage };
  }
}

async function main() {
  const params = new URLSearchParams(location.search);
  const target = params.get("target");
  // Every call carries a bearer token in the authorization header, as a storefront's would
  // (a cross-origin header: CORS must allow it).
  const bearer = (token) => (next) => async (request) => {
    if (token) request.header.set("authorization", `Bearer ${token}`);
    return await next(request);
  };
  const client = (token) =>
    createClient(
      registry.getService("holdfast.catalog.v1.CatalogService"),
      createGrpcWebTransport({ baseUrl: target, useBinaryFormat: true, interceptors: [bearer(token)] }),
    );
  const bytes = new Uint8Array(await (await fetch("/descriptors.bin")).arrayBuffer());
  const registry = createFileRegistry(fromBinary(FileDescriptorSetSchema, bytes));
  const admin = client(params.get("admin"));
  const catalog = client(params.get("customer"));
  const sku = "BROWSER-MUG-1";
  const anonymous = await outcome(() => client(null).getProduct({ sku }));
  const notAdmin = await outcome(() => catalog.upsertProduct({ product: { sku, title: "x", active: true } }));
  const upsert = await outcome(() =>
    admin.upsertProduct({
      product: {
        sku,
        title: "Browser mug",
        price: { amountMinor: 1299n, currency: "EUR" },
        category: "kitchen",
        active: true,
      },
    }),
  );
  const found = await outcome(() => catalog.getProduct({ sku }));
  const missing = await outcome(() => catalog.getProduct({ sku: "NO-SUCH-SKU" }));
  const invalid = await outcome(() => catalog.getProduct({ sku: "" }));
  return {
    origin: location.origin,
    anonymous: anonymous.ok ? { ok: true } : { ok: false, code: anonymous.code },
    notAdmin: notAdmin.ok ? { ok: true } : { ok: false, code: notAdmin.code },
    upsert: upsert.ok ? { ok: true, created: upsert.value.created } : upsert,
    found: found.ok
      ? {
          ok: true,
          sku: found.value.product?.sku,
          title: found.value.product?.title,
          amountMinor: String(found.value.product?.price?.amountMinor),
        }
      : found,
    missing,
    invalid,
  };
}

main().then(
  (result) => {
    window.__result = result;
  },
  (error) => {
    window.__result = { crashed: String(error && error.stack ? error.stack : error) };
  },
);
