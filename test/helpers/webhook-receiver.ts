import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { SIGNATURE_HEADER, verifyDelivery } from '../../src/events/signature.js';
import type { KeyEvent } from '../../src/events/types.js';

export interface Received {
  event: KeyEvent;
  headers: http.IncomingHttpHeaders;
  /** The signature checked against the receiver's secret, as a receiver would. */
  signatureValid: boolean;
}

/**
 * A real HTTP webhook receiver on a loopback port: records every POST with
 * its signature checked. `stop()` closes the port (Keygate's connections are
 * refused); `start()` opens it again on the same port.
 */
export class WebhookReceiver {
  readonly received: Received[] = [];
  /** Answer this status instead of 204 (a receiver that is up but failing). */
  failWith: number | null = null;
  port = 0;
  private server: http.Server | null = null;

  constructor(readonly secret: string) {}

  get url(): string {
    return `http://127.0.0.1:${this.port}/hook`;
  }

  events(type?: string): KeyEvent[] {
    return this.received.filter((r) => type === undefined || r.event.type === type).map((r) => r.event);
  }

  async start(): Promise<void> {
    const server = http.createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        if (this.failWith !== null) {
          res.writeHead(this.failWith).end();
          return;
        }
        const body = Buffer.concat(chunks).toString('utf8');
        const header = req.headers[SIGNATURE_HEADER];
        this.received.push({
          event: JSON.parse(body) as KeyEvent,
          headers: req.headers,
          signatureValid: typeof header === 'string' && verifyDelivery(this.secret, header, body),
        });
        res.writeHead(204).end();
      });
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.port, '127.0.0.1', () => resolve());
    });
    this.port = (server.address() as AddressInfo).port;
    this.server = server;
  }

  async stop(): Promise<void> {
    const s = this.server;
    this.server = null;
    if (!s) return;
    s.closeAllConnections();
    await new Promise<void>((resolve) => s.close(() => resolve()));
  }
}
