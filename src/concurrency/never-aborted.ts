// The signal of a step that waits on nothing a cancel could stop (a lookup,
// a few stat calls): passed where an AbortSignal is asked for, so that no
// signal has to be made for it.
export const NEVER_ABORTED: AbortSignal = new AbortController().signal;
