/**
 * The floor of `npm run bench:sasl`: a bare Node responder to the
 * Dovecot-protocol exchange the bench drives, with canned replies (the
 * handshake, then `OK <id> user=…` for every AUTH line; no decoding, no key
 * check, no log). What Node's own socket reads and writes cost per exchange.
 */
import net from 'node:net';

const port = Number(process.argv[2]);
const HANDSHAKE = 'VERSION\t1\t2\nMECH\tPLAIN\tplaintext\nSPID\t1\nCUID\t1\nCOOKIE\t00000000000000000000000000000000\nDONE\n';

const server = net.createServer((socket) => {
  socket.setNoDelay(true);
  socket.setEncoding('latin1');
  socket.on('error', () => {});
  socket.write(HANDSHAKE);
  let buf = '';
  socket.on('data', (chunk: string) => {
    buf += chunk;
    for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      if (line.startsWith('AUTH\t')) socket.write(`OK\t${line.slice(5, line.indexOf('\t', 5))}\tuser=bench@example.com\n`);
    }
  });
});
server.listen(port, '127.0.0.1', () => process.stdout.write('ready\n'));
process.on('SIGTERM', () => process.exit(0));
