// undici's request, settled as soon as its signal aborts. undici rejects a
// request still waiting for a connection (every connection of its agent
// busy) only once one frees, so a cancelled pull waited for other pulls'
// transfers to end before it could. Here the caller hears the abort at once,
// and a response that arrives after it is let go.
import { type Dispatcher, request } from "undici";

export function requestPromptly(url: string | URL, options: NonNullable<Parameters<typeof request>[1]>): Promise<Dispatcher.ResponseData<unknown>> {
  const pending = request(url, options);
  const signal = options.signal;
  if (!(signal instanceof AbortSignal)) return pending;
  return new Promise((resolve, reject) => {
    const abandon = () => {
      reject(signal.reason);
      // settles once the request leaves the queue: a response that came after all is not read
      pending.then(
        (response) => response.body.destroy(),
        () => undefined,
      );
    };
    if (signal.aborted) return abandon();
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
