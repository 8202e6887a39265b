import { CrlfFramer } from '../crlf-framer.js';

/** POP3 commands and SASL lines: CRLF lines (a bare LF accepted), bounded by `limits.lineLength`. */
export class Pop3Framer extends CrlfFramer {}
