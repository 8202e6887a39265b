import { isIPv4, isIPv6 } from 'node:net';
import type net from 'node:net';
import ipaddr from 'ipaddr.js';

/*
 * PROXY protocol v1 (text) and v2 (binary) header reader, as specified in
 * https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt.
 *
 * Hand-written on purpose: the format is small and fixed, the parser must be
 * bounded and strict (it runs before anything else on an untrusted socket),
 * and it must hand every byte after the header back to the socket untouched —
 * the available npm parsers either buffer whole streams or wrap the server.
 */

export interface ProxyInfo {
  sourceAddress: string;
  sourcePort: number;
  destAddress?: string;
  destPort?: number;
}

export class ProxyProtocolError extends Error {
  readonly code = 'EPROXYPROTOCOL';
  constructor(message: string) {
    super(message);
    this.name = 'ProxyProtocolError';
  }
}

/** v1: "PROXY " … "\r\n", at most 107 bytes including the CRLF. */
export const V1_MAX = 107;
/** v2 address block limit accepted here (the size of the AF_UNIX block); TLVs must fit in it. */
export const V2_MAX_PAYLOAD = 216;
export const V2_SIGNATURE = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a]);
const V1_PREFIX = Buffer.from('PROXY ', 'latin1');
export const DEFAULT_PROXY_TIMEOUT_MS = 5000;

type Parse = { done: false } | { done: true; info: ProxyInfo | null; length: number };

const PORT_RE = /^(0|[1-9]\d{0,4})$/;

function port(text: string): number {
  if (!PORT_RE.test(text) || Number(text) > 65535) throw new ProxyProtocolError(`bad port "${text}" in PROXY v1 header`);
  return Number(text);
}

function parseV1(buf: Buffer): Parse {
  const lf = buf.indexOf(0x0a);
  if (lf < 0) {
    if (buf.length >= V1_MAX) throw new ProxyProtocolError('PROXY v1 header longer than 107 bytes');
    return { done: false };
  }
  if (lf + 1 > V1_MAX) throw new ProxyProtocolError('PROXY v1 header longer than 107 bytes');
  if (buf[lf - 1] !== 0x0d) throw new ProxyProtocolError('PROXY v1 header does not end in CRLF');
  const line = buf.toString('latin1', 0, lf - 1);
  const parts = line.split(' ');
  if (parts[1] === 'UNKNOWN') return { done: true, info: null, length: lf + 1 };
  if (parts.length !== 6) throw new ProxyProtocolError('PROXY v1 header must have 6 fields');
  const [, family, src, dst, sport, dport] = parts as [string, string, string, string, string, string];
  const valid = family === 'TCP4' ? isIPv4 : family === 'TCP6' ? isIPv6 : null;
  if (!valid) throw new ProxyProtocolError(`unknown PROXY v1 family "${family.slice(0, 16)}"`);
  if (!valid(src) || !valid(dst)) throw new ProxyProtocolError(`bad ${family} address in PROXY v1 header`);
  return { done: true, info: { sourceAddress: src, sourcePort: port(sport), destAddress: dst, destPort: port(dport) }, length: lf + 1 };
}

function parseV2(buf: Buffer): Parse {
  if (buf.length < 16) return { done: false };
  const verCmd = buf[12]!;
  if (verCmd >> 4 !== 2) throw new ProxyProtocolError('unsupported PROXY v2 version');
  const command = verCmd & 0x0f;
  if (command > 1) throw new ProxyProtocolError('unknown PROXY v2 command');
  const famProto = buf[13]!;
  const len = buf.readUInt16BE(14);
  if (len > V2_MAX_PAYLOAD) throw new ProxyProtocolError(`PROXY v2 header too large (${len} > ${V2_MAX_PAYLOAD} bytes)`);
  if (buf.length < 16 + len) return { done: false };
  const length = 16 + len;
  const family = famProto >> 4;
  const transport = famProto & 0x0f;
  if (family > 3 || transport > 2) throw new ProxyProtocolError('unknown PROXY v2 address family or transport');
  // LOCAL: a health check from the proxy itself; the connection's own addresses stand.
  if (command === 0) return { done: true, info: null, length };
  const body = buf.subarray(16, length);
  if (family === 1) {
    if (len < 12) throw new ProxyProtocolError('PROXY v2 IPv4 block too short');
    return {
      done: true,
      info: {
        sourceAddress: ipaddr.fromByteArray([...body.subarray(0, 4)]).toString(),
        destAddress: ipaddr.fromByteArray([...body.subarray(4, 8)]).toString(),
        sourcePort: body.readUInt16BE(8),
        destPort: body.readUInt16BE(10),
      },
      length,
    };
  }
  if (family === 2) {
    if (len < 36) throw new ProxyProtocolError('PROXY v2 IPv6 block too short');
    return {
      done: true,
      info: {
        sourceAddress: ipaddr.fromByteArray([...body.subarray(0, 16)]).toString(),
        destAddress: ipaddr.fromByteArray([...body.subarray(16, 32)]).toString(),
        sourcePort: body.readUInt16BE(32),
        destPort: body.readUInt16BE(34),
      },
      length,
    };
  }
  // AF_UNSPEC or AF_UNIX: no IP to report; the connection's own addresses stand.
  return { done: true, info: null, length };
}

/**
 * Parses a PROXY header at the start of `buf`. Returns done:false while more
 * bytes are needed; throws ProxyProtocolError as soon as the bytes cannot be a
 * valid header (so garbage is refused without waiting for the timeout).
 */
export function parseProxyHeader(buf: Buffer): Parse {
  if (buf.length === 0) return { done: false };
  if (buf[0] === V2_SIGNATURE[0]) {
    const n = Math.min(buf.length, V2_SIGNATURE.length);
    if (!buf.subarray(0, n).equals(V2_SIGNATURE.subarray(0, n))) throw new ProxyProtocolError('not a PROXY protocol header');
    return n < V2_SIGNATURE.length ? { done: false } : parseV2(buf);
  }
  const n = Math.min(buf.length, V1_PREFIX.length);
  if (!buf.subarray(0, n).equals(V1_PREFIX.subarray(0, n))) throw new ProxyProtocolError('not a PROXY protocol header');
  return n < V1_PREFIX.length ? { done: false } : parseV1(buf);
}

/**
 * Reads a PROXY v1 or v2 header from the start of a fresh socket (bounded: v1
 * ≤ 107 bytes, v2 ≤ 16+216 here; timeout 5 s). Resolves with the info (null
 * for v1 UNKNOWN / v2 LOCAL / v2 UNSPEC or UNIX) and unshifts any bytes read
 * past the header back into the socket, which is left as fresh as it came: a
 * later 'data' listener starts the flow, and tls.TLSSocket picks the bytes up.
 * Rejects with ProxyProtocolError on a malformed or oversized header, with an
 * ETIMEDOUT error on timeout and ECONNRESET when the peer goes away first. The
 * caller destroys the socket on rejection.
 */
export function readProxyHeader(socket: net.Socket, timeoutMs: number = DEFAULT_PROXY_TIMEOUT_MS): Promise<ProxyInfo | null> {
  return new Promise((resolve, reject) => {
    let buf: Buffer = Buffer.alloc(0);
    let settled = false;
    const cleanup = (): void => {
      settled = true;
      clearTimeout(timer);
      // Removing the last 'readable' listener puts the stream back in its initial (not flowing, not paused) state.
      socket.off('readable', onReadable);
      socket.off('end', onEnd);
      socket.off('close', onEnd);
      socket.off('error', onError);
    };
    const fail = (err: Error): void => {
      if (settled) return;
      cleanup();
      reject(err);
    };
    const onReadable = (): void => {
      if (settled) return;
      let chunk: Buffer | null;
      while ((chunk = socket.read() as Buffer | null) !== null) {
        buf = buf.length === 0 ? chunk : Buffer.concat([buf, chunk]);
        let parsed: Parse;
        try {
          parsed = parseProxyHeader(buf);
        } catch (err) {
          fail(err as Error);
          return;
        }
        if (parsed.done) {
          cleanup();
          if (buf.length > parsed.length) socket.unshift(buf.subarray(parsed.length));
          resolve(parsed.info);
          return;
        }
      }
    };
    const onEnd = (): void => fail(Object.assign(new Error('connection closed before the PROXY header'), { code: 'ECONNRESET' }));
    const onError = (err: Error): void => fail(err);
    const timer = setTimeout(() => fail(Object.assign(new Error(`no PROXY header within ${timeoutMs} ms`), { code: 'ETIMEDOUT' })), timeoutMs);
    socket.on('readable', onReadable);
    socket.once('end', onEnd);
    socket.once('close', onEnd);
    socket.once('error', onError);
    // Bytes may already be buffered (the 'readable' listener fires for them too, but be explicit).
    if (socket.readableLength > 0) onReadable();
  });
}
