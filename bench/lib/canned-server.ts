/**
 * The floor: a bare Node IMAP responder with canned replies (no parsing
 * beyond the tag, no key check), the same greeting → LOGIN → LOGOUT exchange
 * the bench drives. Keygate's numbers are read against it. Given a
 * certificate and key (argv 3 and 4) it speaks implicit TLS through Node's
 * own tls.Server with its defaults: the floor of a TLS login in Node.
 */
import { readFileSync } from 'node:fs';
import net from 'node:net';
import tls from 'node:tls';

const port = Number(process.argv[2]);
const [certPath, keyPath] = [process.argv[3], process.argv[4]];

function serve(socket: net.Socket): void {
  socket.setNoDelay(true);
  socket.on('error', () => {});
  socket.write('* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] ready\r\n');
  let buf = '';
  socket.on('data', (d: Buffer) => {
    buf += d.toString('latin1');
    for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      const tag = line.slice(0, line.indexOf(' '));
      if (/ LOGOUT/i.test(line)) socket.end(`* BYE bye\r\n${tag} OK LOGOUT completed\r\n`);
      else socket.write(`${tag} OK Logged in\r\n`);
    }
  });
}

const server = certPath && keyPath ? tls.createServer({ cert: readFileSync(certPath), key: readFileSync(keyPath) }, serve) : net.createServer(serve);
server.on('tlsClientError', () => {});
server.listen(port, '127.0.0.1', () => process.stdout.write('ready\n'));
process.on('SIGTERM', () => process.exit(0));
