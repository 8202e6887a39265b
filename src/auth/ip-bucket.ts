import { isIPv4 } from 'node:net';
import ipaddr from 'ipaddr.js';

/**
 * The client a limit counts: an IPv4 address as is (IPv4-mapped IPv6 too), an
 * IPv6 address by its /64, since one host can hold a whole /64 and rotate
 * through it. Used by the login limits and the per-IP connection cap alike.
 */
export function ipBucket(ip: string): string {
  // Plain dotted-quad (no leading zeros, no hex) is already in ipaddr's form: the common case, without a parse.
  if (isIPv4(ip)) return ip;
  try {
    const addr = ipaddr.process(ip);
    if (addr.kind() === 'ipv4') return addr.toString();
    const bytes = (addr as ipaddr.IPv6).toByteArray();
    for (let i = 8; i < 16; i++) bytes[i] = 0;
    return `${ipaddr.fromByteArray(bytes).toString()}/64`;
  } catch {
    return ip.slice(0, 64);
  }
}
