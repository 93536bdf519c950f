// The {{name}} component's request handler. esbuild strips the types when
// it bundles (`npm run build`); ComponentizeJS turns the bundle into a
// WebAssembly component.
import { ResponseBuilder } from "@fermyon/spin-sdk";

/** Greets the caller, naming the path it asked for. */
export async function handler(req: Request, res: ResponseBuilder): Promise<void> {
  const path: string = new URL(req.url).pathname;
  res.set({ "content-type": "text/plain" });
  res.send(`Hello from {{name}}! You asked for ${path}\n`);
}
