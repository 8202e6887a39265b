export { startImapListeners } from './server.js';
