import { ANY_STATE, type ImapCommand } from '../command.js';

/** LOGOUT: `* BYE`, tagged OK, close. */
export const logout: ImapCommand = {
  name: 'LOGOUT',
  states: ANY_STATE,
  args: [],
  handler(session, { tag }) {
    session.logout(tag);
  },
};
