import type { Server } from 'node:http';
import type { Socket } from 'node:net';

/** As the mail listeners name them: refused at a full listener, or closed to make room. */
export type ConnectionRefusal = 'listener_full' | 'evicted';

export interface ConnectionEvents {
  /** A connection was closed or refused to keep the count under the cap. */
  refused(reason: ConnectionRefusal): void;
  /** The open count changed by +1 or -1. */
  counted(delta: 1 | -1): void;
}

export interface ConnectionCap {
  /** Open connections now. */
  open(): number;
  /** Of those, connections with no request in progress. */
  idle(): number;
}

/**
 * Bounds the control plane's open connections, as Dovecot does its logins:
 * when a new connection would go over `max`, the connection idle longest (no
 * request in progress: kept alive after a response, or connected and silent)
 * is closed to make room; only when every open connection is busy is the new
 * one refused. Timeouts (headers, idle, request) are the server's own; this
 * only keeps the count.
 *
 * Written here rather than taken from a library: Node's `server.maxConnections`
 * drops the new connection whatever the others are doing, and no maintained
 * package evicts idle connections.
 */
export function capConnections(server: Server, max: number, events: ConnectionEvents): ConnectionCap {
  const open = new Set<Socket>();
  // Insertion order is idle order: the first entry has been idle longest.
  const idle = new Set<Socket>();
  const busy = new Map<Socket, number>();

  server.on('connection', (socket: Socket) => {
    if (open.size >= max) {
      const oldest = idle.values().next().value;
      if (oldest === undefined) {
        events.refused('listener_full');
        socket.destroy();
        return;
      }
      forget(oldest);
      oldest.destroy();
      events.refused('evicted');
    }
    open.add(socket);
    idle.add(socket);
    events.counted(1);
    socket.once('close', () => forget(socket));
  });

  server.on('request', (req, res) => {
    const socket = req.socket;
    if (!open.has(socket)) return;
    idle.delete(socket);
    busy.set(socket, (busy.get(socket) ?? 0) + 1);
    res.once('close', () => {
      const left = (busy.get(socket) ?? 1) - 1;
      if (left > 0) return void busy.set(socket, left);
      busy.delete(socket);
      if (open.has(socket)) idle.add(socket); // to the end: idle from now
    });
  });

  function forget(socket: Socket): void {
    if (open.delete(socket)) events.counted(-1);
    idle.delete(socket);
    busy.delete(socket);
  }

  return { open: () => open.size, idle: () => idle.size };
}
