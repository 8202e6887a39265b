/**
 * The floor: a bare Node IMAP responder with canned replies (no parsing
 * beyond the tag, no key check, no TLS), the same greeting → LOGIN → LOGOUT
 * exchange the bench drives. Keygate's numbers are read against it.
 */
import net from 'node:net';

const port = Number(process.argv[2]);
const server = net.createServer((socket) => {
  socket.setNoDelay(true);
  socket.on('error', () => {});
  socket.write('* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] ready\r\n');
  let buf = '';
  socket.on('data', (d) => {
    buf += d.toString('latin1');
    for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      const tag = line.slice(0, line.indexOf(' '));
      if (/ LOGOUT/i.test(line)) socket.end(`* BYE bye\r\n${tag} OK LOGOUT completed\r\n`);
      else socket.write(`${tag} OK Logged in\r\n`);
    }
  });
});
server.listen(port, '127.0.0.1', () => process.stdout.write('ready\n'));
process.on('SIGTERM', () => process.exit(0));
