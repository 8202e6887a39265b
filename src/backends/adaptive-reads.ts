/** What an idle upstream connection's next read may take. */
export const MIN_READ = 4 * 1024;
/** A read this short means the transfer is over (a tagged reply, an IDLE update): back to MIN_READ. */
export const SMALL_READ = 16 * 1024;
/** Reads of 1 and 4 MiB were no cheaper than 512 KiB when relaying 10 MB. */
export const MAX_READ = 512 * 1024;

type Sink = (chunk: Buffer) => void;

/**
 * The one buffer every connection at MIN_READ reads into. Node runs a read's
 * callback synchronously right after the read, on this thread, and the
 * callback copies the bytes out, so no later read (of this connection or
 * another) can overwrite bytes still in use; and an idle connection, whose
 * next read Node has already asked a buffer for, holds none of its own.
 */
const scratch = Buffer.allocUnsafeSlow(MIN_READ);

/**
 * Read buffers for a plain upstream socket (`net.connect({ onread })`) that
 * grow ×4 while reads fill them, follow the size of a large partial read, and
 * fall back to MIN_READ after a short one. A large FETCH or RETR then costs a
 * few reads of up to 512 KiB instead of one per 64 KiB (Node's fixed size):
 * Keygate's CPU per MB relayed went from about 1.0 to 0.7 ms (bench:proxy).
 * At MIN_READ a connection reads into the shared scratch buffer and the bytes
 * are copied into a chunk of their own size (a login dialogue, a tagged
 * reply, an IDLE update: small, and pooled by Buffer.allocUnsafe); past it,
 * every read gets a fresh buffer handed on as it is, so a chunk waiting in
 * the client's write queue is never overwritten.
 */
export class AdaptiveReads {
  private size = MIN_READ;
  /** Where the bytes go; switched from the login reader to the client relay. */
  sink: Sink = () => {};

  readonly onread = {
    buffer: (): Buffer => (this.size === MIN_READ ? scratch : Buffer.allocUnsafe(this.size)),
    /** Always true: backpressure is the relay's socket.pause(), which works for TLS sockets too. */
    callback: (n: number, buf: Uint8Array): boolean => {
      this.size = n === buf.length ? Math.min(this.size * 4, MAX_READ) : n < SMALL_READ ? MIN_READ : nextPowerOfTwo(n);
      this.sink(buf === scratch ? Buffer.from(scratch.subarray(0, n)) : Buffer.from(buf.buffer, buf.byteOffset, n));
      return true;
    },
  };
}

function nextPowerOfTwo(n: number): number {
  return 2 ** Math.ceil(Math.log2(Math.max(1, n)));
}
