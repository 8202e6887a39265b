export { startSmtpListeners } from './server.js';
