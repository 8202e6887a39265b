/**
 * `keygate serve` for the login benches: the same settings, listeners and
 * login path, with logged-in sessions handed to no mail server (the test
 * harness's NO_BACKENDS). A real `keygate serve` refuses a login it has no
 * route for, so this is how the cost of a login alone is measured.
 *
 * argv: <dist dir of the build> serve --dotted.setting value …
 */
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

const [dist, , ...args] = process.argv.slice(2);
const load = (file) => import(pathToFileURL(join(dist, file)).href);
const { loadConfig } = await load('config.js');
const { startServer } = await load('server.js');
const { NO_BACKENDS } = await load('backends/types.js');
const { createLogger } = await load('log.js');

const flags = {};
for (let i = 0; i < args.length; i += 2) flags[args[i].replace(/^--/, '')] = args[i + 1];
const config = loadConfig({ env: process.env, flags });
const logger = createLogger(config.log.level);
const server = await startServer(config, logger, { backends: NO_BACKENDS });
process.once('SIGTERM', () => server.close().then(() => process.exit(0)));
