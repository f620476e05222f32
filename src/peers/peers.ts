// What a server knows of its peers while it runs: the list it asks (none
// without --peers), the token it sends them, the cap on what it sends them,
// and where peer traffic and peer errors are counted and logged.
import type { Logger } from "pino";
import type { PeerList } from "./peer-list.js";
import type { PeerRecorder } from "./peer-recorder.js";
import type { PeerUploads } from "./peer-uploads.js";

export interface Peers {
  /** --peers; undefined: pulls ask no peer */
  list: PeerList | undefined;
  /** --peer-token-file's content, sent as a bearer token */
  token: string | undefined;
  /** what the hub endpoint sends to peers, capped by --peer-max-bytes-per-second */
  uploads: PeerUploads;
  logger: Logger;
  recorder: PeerRecorder | undefined;
  /** a peer transfer with no byte for this long is a peer error (timeout) */
  stallMs: number;
  /** the most a peer's HEAD may take */
  headBudgetMs: number;
}

/** The contract's limits: 5 s without progress, 200 ms for a HEAD, 3 peers per file. */
export const PEER_STALL_MS = 5_000;
export const PEER_HEAD_BUDGET_MS = 200;
export const PEERS_PER_FILE = 3;
