export { startPop3Listeners } from './server.js';
