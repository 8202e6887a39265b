import ipaddr from 'ipaddr.js';

/** Parses and validates a CIDR (or bare address, taken as /32 or /128). Throws on bad input. */
export function parseCidr(text: string): [ipaddr.IPv4 | ipaddr.IPv6, number] {
  const t = text.trim();
  if (t.includes('/')) return ipaddr.parseCIDR(t);
  const addr = ipaddr.parse(t);
  return [addr, addr.kind() === 'ipv4' ? 32 : 128];
}

export function isValidCidr(text: string): boolean {
  try {
    parseCidr(text);
    return true;
  } catch {
    return false;
  }
}

function normalizeIp(ip: string): ipaddr.IPv4 | ipaddr.IPv6 | null {
  try {
    // IPv4-mapped IPv6 (::ffff:1.2.3.4), as Node reports on dual-stack sockets, compares as IPv4.
    return ipaddr.process(ip);
  } catch {
    return null;
  }
}

/** True when `ip` lies in any of `cidrs`. An unparsable ip matches nothing. */
export function ipInList(ip: string, cidrs: readonly string[]): boolean {
  const addr = normalizeIp(ip);
  if (!addr) return false;
  return cidrs.some((c) => {
    const [range, bits] = parseCidr(c);
    const r = range.kind() === 'ipv6' && (range as ipaddr.IPv6).isIPv4MappedAddress() ? (range as ipaddr.IPv6).toIPv4Address() : range;
    if (r.kind() !== addr.kind()) return false;
    const b = r.kind() === 'ipv4' && range.kind() === 'ipv6' ? bits - 96 : bits;
    return addr.match(r, b);
  });
}

export function isLoopback(ip: string): boolean {
  const addr = normalizeIp(ip);
  return addr !== null && addr.range() === 'loopback';
}
