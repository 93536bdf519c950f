// Spindle's JavaScript test app, written as a Spin user would with the Spin
// JS SDK (@fermyon/spin-sdk): one HTTP component whose routes exercise the
// key-value store, the component's variables and outbound HTTP.
import { Kv, Variables } from "@fermyon/spin-sdk";

const decoder = new TextDecoder();

/**
 * Answers one request; `res` is the SDK's ResponseBuilder.
 * @param {Request} req
 * @param {import("@fermyon/spin-sdk").ResponseBuilder} res
 */
export async function handler(req, res) {
  const url = new URL(req.url);
  switch (url.pathname) {
    case "/hello":
      res.set({ "content-type": "text/plain", "x-js-guest": "spin-js-sdk" });
      res.send("Hello from the Spin JS SDK");
      return;
    case "/kv":
      keyValue(res);
      return;
    case "/variables":
      variables(res);
      return;
    case "/outbound":
      await outbound(url, res);
      return;
    default:
      res.status(404);
      res.send(`no route for ${url.pathname}`);
  }
}

/** Sets, reads back and deletes a key in the `default` store. */
function keyValue(res) {
  try {
    const store = Kv.openDefault();
    store.set("js-guest", "stored by javascript");
    const value = store.get("js-guest");
    const text = value == null ? null : decoder.decode(value);
    if (text !== "stored by javascript") {
      throw new Error(`get returned ${JSON.stringify(text)} after set`);
    }
    store.delete("js-guest");
    if (store.exists("js-guest")) {
      throw new Error("the key still exists after delete");
    }
    res.send("ok");
  } catch (err) {
    res.status(500);
    res.send(`key-value failed: ${err}`);
  }
}

/** Answers the component variable `greeting`. */
function variables(res) {
  // The SDK's get answers null for a variable that is missing or fails.
  const value = Variables.get("greeting");
  if (value === null) {
    res.status(500);
    res.send("variable greeting could not be read");
    return;
  }
  res.send(value);
}

/** Fetches `?url=` and answers with the upstream's status and body. */
async function outbound(url, res) {
  const target = url.searchParams.get("url");
  if (!target) {
    res.status(400);
    res.send("missing ?url=");
    return;
  }
  let upstream;
  try {
    upstream = await fetch(target);
  } catch (err) {
    res.status(502);
    res.send(`fetch failed: ${err}`);
    return;
  }
  const body = await upstream.text();
  res.status(upstream.status);
  res.send(body);
}
