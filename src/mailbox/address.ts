/** RFC 5322 dot-atom text: atoms joined by single dots, none at either end. */
const LOCAL_PART = /^[a-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[a-z0-9!#$%&'*+/=?^_`{|}~-]+)*$/;
/** LDH labels (IDNs in their xn-- form) joined by single dots. */
const DOMAIN = /^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$/;

/**
 * True when an address can name a Maildir of the local mailbox
 * (mail/<domain>/<local part>): a dot-atom local part without `/` and an
 * ASCII domain, so no address can reach outside its own directory (`..`,
 * `a/b`) or collide with another's. The store accepts more than this; other
 * addresses are refused by the local mailbox, not by the proxy.
 */
export function isMailboxSafeAddress(address: string): boolean {
  const at = address.lastIndexOf('@');
  if (at <= 0 || address.length > 254) return false;
  const local = address.slice(0, at);
  const domain = address.slice(at + 1);
  return local.length <= 64 && !local.includes('/') && LOCAL_PART.test(local) && DOMAIN.test(domain);
}
