// A lease: a service's hold on a model's install (see leases.ts), as it is
// kept in memory and written to the lease journal.
export interface Lease {
  id: string;
  /** the model leased */
  name: string;
  grantedAtMs: number;
  expiresAtMs: number;
  /** who took it: the caller's token name, else its peer address (absent in leases of earlier versions) */
  holder?: string;
}
