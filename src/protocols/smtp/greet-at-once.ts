import { SMTPConnection } from 'smtp-server/lib/smtp-connection.js';

/**
 * smtp-server waits a fixed 100 ms before every greeting (its early-talker
 * check), which caps login cycles at concurrency / 0.1 s. This makes it greet
 * at once: `init` is smtp-server's own minus the timer.
 */
type Internals = { _setListeners(cb: () => void): void; connectionReady(): void };
(SMTPConnection.prototype as unknown as { init(): void }).init = function (this: Internals) {
  this._setListeners(() => this.connectionReady());
};
