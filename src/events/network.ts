import ipaddr from 'ipaddr.js';

/**
 * The network an address belongs to for `key.new_network`, as CIDR text:
 * IPv4 (IPv4-mapped IPv6 too) by `v4Prefix`, IPv6 by `v6Prefix`. An
 * unparsable address is its own network.
 */
export function networkOf(ip: string, v4Prefix: number, v6Prefix: number): string {
  try {
    const addr = ipaddr.process(ip);
    const bits = addr.kind() === 'ipv4' ? v4Prefix : v6Prefix;
    const bytes = addr.toByteArray();
    for (let i = 0; i < bytes.length; i++) {
      const keep = Math.min(8, Math.max(0, bits - i * 8));
      bytes[i]! &= (0xff << (8 - keep)) & 0xff;
    }
    return `${ipaddr.fromByteArray(bytes).toString()}/${bits}`;
  } catch {
    return ip.slice(0, 64);
  }
}
