import QRCode from 'qrcode';

/**
 * QR codes of setup links, through the `qrcode` package. Error correction M
 * (15 %), a 4-module quiet zone as the QR standard asks, black on white.
 */
export interface QrOptions {
  /** Pixels per module (PNG); default 8. */
  scale?: number;
  /** Quiet zone in modules; default 4. */
  margin?: number;
  errorCorrectionLevel?: 'L' | 'M' | 'Q' | 'H';
}

/** Setup links are short; anything longer is a mistake, not a QR code. */
export const QR_MAX_TEXT = 2048;

function options(opts: QrOptions) {
  return {
    errorCorrectionLevel: opts.errorCorrectionLevel ?? 'M',
    margin: opts.margin ?? 4,
    scale: opts.scale ?? 8,
    color: { dark: '#000000ff', light: '#ffffffff' },
  } as const;
}

function check(text: string): void {
  if (text.length === 0 || text.length > QR_MAX_TEXT) throw new RangeError(`QR text must be 1-${QR_MAX_TEXT} characters`);
}

/** The QR code as a standalone SVG document (`<svg …>…</svg>`). @throws RangeError for empty or over-long text. */
export async function qrSvg(text: string, opts: QrOptions = {}): Promise<string> {
  check(text);
  return QRCode.toString(text, { ...options(opts), type: 'svg' });
}

/** The QR code as a PNG image. @throws RangeError for empty or over-long text. */
export async function qrPng(text: string, opts: QrOptions = {}): Promise<Buffer> {
  check(text);
  return QRCode.toBuffer(text, { ...options(opts), type: 'png' });
}

/** The PNG as a `data:image/png;base64,…` URL, for an `<img src>`. */
export async function qrPngDataUrl(text: string, opts: QrOptions = {}): Promise<string> {
  return `data:image/png;base64,${(await qrPng(text, opts)).toString('base64')}`;
}
