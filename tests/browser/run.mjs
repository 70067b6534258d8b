// Browser test driver: bundles page.js, serves it on its own loopback port (so the mesh is
// another origin), opens it in headless Debian Chromium through playwright-core and checks
// what connect-web saw; then opens it from a second port the mesh does not allow, whose calls
// the browser must refuse (CORS). Usage: node run.mjs <mesh host:port> <descriptors.bin> <page port>
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:http";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import assert from "node:assert/strict";
import * as esbuild from "esbuild";
import { chromium } from "playwright-core";

const [mesh, descriptorsPath, pagePort, adminToken, customerToken] = process.argv.slice(2);
if (!mesh || !descriptorsPath || !pagePort || !adminToken || !customerToken) {
  console.error("usage: node run.mjs <host:port> <descriptors.bin> <page port> <admin token> <customer token>");
  process.exit(2);
}
const here = dirname(fileURLToPath(import.meta.url));

const bundle = await esbuild.build({
  entryPoints: [join(here, "page.js")],
  bundle: true,
  format: "esm",
  target: "es2022",
  write: false,
  logLevel: "warning",
});
const files = {
  "/": ["text/html", '<!doctype html><meta charset="utf-8"><title>holdfast grpc-web</title><script type="module" src="/page.js"></script>'],
  "/page.js": ["text/javascript", bundle.outputFiles[0].contents],
  "/descriptors.bin": ["application/octet-stream", readFileSync(descriptorsPath)],
};
function serveFiles(request, response) {
  const file = files[new URL(request.url, "http://x").pathname];
  if (!file) {
    response.writeHead(404).end();
    return;
  }
  response.writeHead(200, { "content-type": file[0] }).end(file[1]);
}
// The origin the mesh allows (run.sh passed it as --cors-origin), and one it does not.
const server = createServer(serveFiles);
await new Promise((resolve) => server.listen(Number(pagePort), "127.0.0.1", resolve));
const pageOrigin = `http://127.0.0.1:${server.address().port}`;
const stranger = createServer(serveFiles);
await new Promise((resolve) => stranger.listen(0, "127.0.0.1", resolve));
const strangerOrigin = `http://127.0.0.1:${stranger.address().port}`;

const profile = mkdtempSync(join(tmpdir(), "holdfast-chromium-"));
let context;
let failed = false;
try {
  // launchPersistentContext: the fresh profile directory is Chromium's --user-data-dir.
  context = await chromium.launchPersistentContext(profile, {
    executablePath: "/usr/bin/chromium",
    headless: true,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
  const page = context.pages()[0] ?? (await context.newPage());
  const consoleLines = [];
  page.on("console", (message) => consoleLines.push(`${message.type()}: ${message.text()}`));
  const query = new URLSearchParams({ target: `http://${mesh}`, admin: adminToken, customer: customerToken });
  await page.goto(`${pageOrigin}/?${query}`);
  await page.waitForFunction(() => window.__result !== undefined, null, { timeout: 30_000 });
  const result = await page.evaluate(() => window.__result);
  console.log(JSON.stringify(result, null, 2));
  try {
    assert.equal(result.crashed, undefined, "the page script crashed");
    assert.notEqual(new URL(result.origin).port, mesh.split(":").pop(), "page and mesh must be cross-origin");
    assert.deepEqual(result.anonymous, { ok: false, code: "Unauthenticated" }, "a call without a token");
    assert.deepEqual(result.notAdmin, { ok: false, code: "PermissionDenied" }, "UpsertProduct as a customer");
    assert.deepEqual(result.upsert, { ok: true, created: true }, "UpsertProduct as an admin succeeds");
    assert.deepEqual(
      result.found,
      { ok: true, sku: "BROWSER-MUG-1", title: "Browser mug", amountMinor: "1299" },
      "GetProduct of the upserted SKU succeeds",
    );
    // The status of an error arrives in response headers (trailers-only): readable only
    // when CORS exposes grpc-status; otherwise connect-web reports UNKNOWN "missing trailer".
    assert.equal(result.missing.ok, false, "GetProduct of a missing SKU fails");
    assert.equal(result.missing.code, "NotFound", `NOT_FOUND with its code: ${JSON.stringify(result.missing)}`);
    assert.match(result.missing.message, /NO-SUCH-SKU/, "grpc-message is readable too");
    assert.equal(result.invalid.code, "InvalidArgument", `INVALID_ARGUMENT: ${JSON.stringify(result.invalid)}`);

    // The same page from an origin the mesh does not allow: no CORS allow headers, so the
    // browser hands the page no response at all (not even the NOT_FOUND above).
    await page.goto(`${strangerOrigin}/?${query}`);
    await page.waitForFunction(() => window.__result !== undefined, null, { timeout: 30_000 });
    const refused = await page.evaluate(() => window.__result);
    console.log(JSON.stringify({ strangerOrigin, ...refused }, null, 2));
    assert.equal(refused.crashed, undefined, "the page script crashed");
    for (const call of ["upsert", "found", "missing", "invalid"]) {
      assert.equal(refused[call].ok, false, `${call} from ${strangerOrigin} must be refused`);
      assert.ok(!["NotFound", "InvalidArgument"].includes(refused[call].code), `${call} reached the mesh: ${JSON.stringify(refused[call])}`);
    }
  } catch (error) {
    failed = true;
    console.error(`browser-test: FAIL: ${error.message}`);
    if (consoleLines.length) console.error(consoleLines.join("\n"));
  }
} finally {
  await context?.close();
  server.close();
  stranger.close();
  rmSync(profile, { recursive: true, force: true });
}
if (failed) process.exit(1);
console.log(
  "browser-test: 1 passed, 0 failed (chromium, cross-origin grpc-web with bearer tokens: UNAUTHENTICATED, PERMISSION_DENIED, success, NOT_FOUND, INVALID_ARGUMENT; unknown origin refused)",
);
