export { startImapListeners } from './server.js';
export { ImapConnection, CAPABILITIES } from './connection.js';
export { COMMANDS } from './commands/index.js';
