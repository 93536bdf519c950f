// The entry point the build bundles: it wires the handler in index.js to the
// component's wasi:http/incoming-handler export, as the Spin JS SDK's HTTP
// template does. ComponentizeJS (StarlingMonkey) delivers each request as a
// service-worker style `fetch` event; the SDK's ResponseBuilder resolves the
// response promise once the handler sends a response.
import { ResponseBuilder } from "@fermyon/spin-sdk";
import { handler } from "./index.js";

addEventListener("fetch", (event) => {
  let resolve;
  const response = new Promise((res) => {
    resolve = res;
  });
  event.respondWith(response);
  const builder = new ResponseBuilder(resolve);
  handler(event.request, builder).catch((err) => {
    // A handler that throws still answers (when it has not already), so
    // the failure shows up as a 500 with its reason instead of a hang.
    try {
      builder.status(500);
      builder.send(`handler failed: ${err}`);
    } catch {
      // The handler had already started its response; nothing left to do.
    }
  });
});
