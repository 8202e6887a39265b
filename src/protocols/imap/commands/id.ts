import { ANY_STATE, type ImapCommand } from '../command.js';

/** ID (RFC 2971): the client's fields are accepted and ignored; we name ourselves without a version. */
export const id: ImapCommand = {
  name: 'ID',
  states: ANY_STATE,
  args: [{ kind: 'list-or-nil' }],
  handler(session, { tag }) {
    session.send(`* ID ("name" "Keygate")\r\n${tag} OK ID completed\r\n`);
  },
};
