import { once } from 'node:events';
import net from 'node:net';
import { setImmediate as tick } from 'node:timers/promises';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { afterAll, describe, expect, it } from 'vitest';
import { splice } from '../../src/protocols/splice.js';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

const servers: net.Server[] = [];
afterAll(async () => {
  for (const s of servers) await new Promise((r) => s.close(r));
});

/** A connected pair on loopback: [the side Keygate holds, the remote peer]. */
async function socketPair(): Promise<[net.Socket, net.Socket]> {
  const server = net.createServer();
  servers.push(server);
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const accepted = once(server, 'connection') as Promise<[net.Socket]>;
  const peer = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
  const [held] = await accepted;
  await once(peer, 'connect');
  return [held, peer];
}

/** Splices a client to an upstream, lets the upstream end the session and the client close; returns a weak reference to the client socket Keygate held. */
async function sessionThatEnded(): Promise<{ client: WeakRef<net.Socket>; received: string }> {
  const [client, clientPeer] = await socketPair();
  const [upstream, upstreamPeer] = await socketPair();
  splice(client, { socket: upstream, relay: (sink) => void upstream.on('data', sink), close: () => void upstream.destroy() }, { lingerMs: 30_000, onUpstreamError: () => {}, onUpstreamEnded: () => {} });
  let received = '';
  clientPeer.on('data', (d: Buffer) => (received += d.toString()));
  upstreamPeer.end('* BYE logging out\r\n');
  await once(clientPeer, 'end');
  clientPeer.destroy();
  await once(client, 'close');
  upstreamPeer.destroy();
  return { client: new WeakRef(client), received };
}

describe('splice', () => {
  it('a session the upstream ended leaves nothing behind once the client has closed (no timer keeps its socket for a minute)', async () => {
    const { client, received } = await sessionThatEnded();
    expect(received).toBe('* BYE logging out\r\n');
    for (let i = 0; i < 10 && client.deref() !== undefined; i++) {
      await tick();
      gc();
    }
    expect(client.deref()).toBeUndefined();
  });
});
