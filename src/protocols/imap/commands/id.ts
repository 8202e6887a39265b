import { clientInfo } from '../../../auth/attempt.js';
import { ANY_STATE, astring, type ImapCommand } from '../command.js';
import type { Token } from '../parser.js';

/** The value of one field in an ID list (`"name" "Thunderbird"`); NIL and missing fields are undefined. */
function field(items: Token[], name: string): string | undefined {
  for (let i = 0; i + 1 < items.length; i += 2) {
    if (astring(items[i]).toLowerCase() === name && items[i + 1]!.type === 'string') return astring(items[i + 1]);
  }
  return undefined;
}

/**
 * ID (RFC 2971): the client's name and version are kept (bounded) with its
 * login attempts; we name ourselves without a version.
 */
export const id: ImapCommand = {
  name: 'ID',
  states: ANY_STATE,
  args: [{ kind: 'list-or-nil' }],
  handler(session, { tag, args }) {
    const list = args[0];
    if (list?.type === 'list') session.client = clientInfo(field(list.items, 'name'), field(list.items, 'version'));
    session.send(`* ID ("name" "Keygate")\r\n${tag} OK ID completed\r\n`);
  },
};
