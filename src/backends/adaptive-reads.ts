/** What an idle upstream connection holds for its next read. */
export const MIN_READ = 4 * 1024;
/** A read this short means the transfer is over (a tagged reply, an IDLE update): back to MIN_READ. */
export const SMALL_READ = 16 * 1024;
/** Reads of 1 and 4 MiB were no cheaper than 512 KiB when relaying 10 MB. */
export const MAX_READ = 512 * 1024;

type Sink = (chunk: Buffer) => void;

/**
 * Read buffers for a plain upstream socket (`net.connect({ onread })`) that
 * grow ×4 while reads fill them, follow the size of a large partial read, and
 * fall back to 4 KiB after a short one. A large FETCH or RETR then costs a
 * few reads of up to 512 KiB instead of one per 64 KiB (Node's fixed size):
 * Keygate's CPU per MB relayed went from about 1.0 to 0.7 ms (bench:proxy).
 * Node asks for the next buffer right after each read, so a connection holds
 * one buffer the size its last read chose while idle; the short reply that
 * ends a transfer (the tagged OK, `+ idling`) brings it back to 4 KiB.
 * Every read gets a fresh buffer, so a chunk waiting in the client's write
 * queue is never overwritten.
 */
export class AdaptiveReads {
  private size = MIN_READ;
  /** Where the bytes go; switched from the login reader to the client relay. */
  sink: Sink = () => {};

  readonly onread = {
    buffer: (): Buffer => Buffer.allocUnsafe(this.size),
    /** Always true: backpressure is the relay's socket.pause(), which works for TLS sockets too. */
    callback: (n: number, buf: Uint8Array): boolean => {
      this.size = n === buf.length ? Math.min(this.size * 4, MAX_READ) : n < SMALL_READ ? MIN_READ : nextPowerOfTwo(n);
      this.sink(Buffer.from(buf.buffer, buf.byteOffset, n));
      return true;
    },
  };
}

function nextPowerOfTwo(n: number): number {
  return 2 ** Math.ceil(Math.log2(Math.max(1, n)));
}
