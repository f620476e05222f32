// undici's request, settled as soon as its signal aborts. undici rejects a
// request still waiting for a connection (every connection of its agent
// busy) only once one frees, so a cancelled pull waited for other pulls'
// transfers to end before it could. Here the caller hears the abort at once,
// and a response that arrives after it is let go.
import { type Dispatcher, request } from "undici";

export function requestPromptly(url: string | URL, options: NonNullable<Parameters<typeof request>[1]>): Promise<Dispatcher.ResponseData<unknown>> {
  const signal = options.signal;
  if (!(signal instanceof AbortSignal)) return request(url, options);
  // undici would still queue it, and connect, before it gave up
  if (signal.aborted) return Promise.reject(signal.reason);
  const pending = request(url, options);
  return new Promise((resolve, reject) => {
    const abandon = () => {
      reject(signal.reason);
      // settles once the request leaves the queue; a response that came all the same is read to
      // its end and dropped (its failure, if any, concerns nobody: the caller has gone)
      pending.then(
        (response) => response.body.dump().catch(() => undefined),
        () => undefined,
      );
    };
    signal.addEventListener("abort", abandon, { once: true });
    pending.then(
      (response) => {
        signal.removeEventListener("abort", abandon);
        resolve(response);
      },
      (err: unknown) => {
        signal.removeEventListener("abort", abandon);
        reject(err);
      },
    );
  });
}
