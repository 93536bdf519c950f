// The entry point: wires `handler` to the component's HTTP export. Each
// request arrives as a service-worker style `fetch` event; the SDK's
// ResponseBuilder resolves the response once the handler sends it.
import { ResponseBuilder } from "@fermyon/spin-sdk";
import { handler } from "./index";

interface FetchEvent extends Event {
  request: Request;
  respondWith(response: Promise<Response>): void;
}

addEventListener("fetch", (event) => {
  const fetchEvent = event as FetchEvent;
  let resolve: (response: Response) => void = () => {};
  const response = new Promise<Response>((res) => {
    resolve = res;
  });
  fetchEvent.respondWith(response);
  const builder = new ResponseBuilder(resolve);
  handler(fetchEvent.request, builder).catch((err: unknown) => {
    // A handler that throws still answers, unless it already has.
    try {
      builder.status(500);
      builder.send(`handler failed: ${err}`);
    } catch {
      // The response was already under way.
    }
  });
});
