import { inflateSync } from 'node:zlib';
import { XMLParser, XMLValidator } from 'fast-xml-parser';
import QRCode from 'qrcode';
import { describe, expect, it } from 'vitest';
import { qrPng, qrPngDataUrl, qrSvg } from '../../src/setup/qr.js';

const URL_TEXT = 'https://keygate.example.com/setup/AbCdEfGhIjKlMnOpQrStUvWxYz0123456789-_AbCdE';
const PNG_SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

const CRC_TABLE = Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});
const crc32 = (buf: Buffer): number => {
  let c = 0xffffffff;
  for (const b of buf) c = CRC_TABLE[(c ^ b) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
};

interface DecodedPng {
  width: number;
  height: number;
  /** Whether the pixel at (x, y) is dark. */
  dark(x: number, y: number): boolean;
}

/** A small PNG reader: signature, chunk CRCs, IHDR, IDAT inflate and the five row filters (8-bit grey/RGB/RGBA). */
function decodePng(png: Buffer): DecodedPng {
  expect(png.subarray(0, 8).equals(PNG_SIGNATURE)).toBe(true);
  let pos = 8;
  let width = 0;
  let height = 0;
  let channels = 0;
  const idat: Buffer[] = [];
  const types: string[] = [];
  while (pos < png.length) {
    const len = png.readUInt32BE(pos);
    const type = png.toString('latin1', pos + 4, pos + 8);
    const data = png.subarray(pos + 8, pos + 8 + len);
    if (png.readUInt32BE(pos + 8 + len) !== crc32(png.subarray(pos + 4, pos + 8 + len))) throw new Error(`${type}: bad CRC`);
    types.push(type);
    if (type === 'IHDR') {
      width = data.readUInt32BE(0);
      height = data.readUInt32BE(4);
      expect(data[8], 'bit depth').toBe(8);
      expect(data[12], 'interlace').toBe(0);
      channels = ({ 0: 1, 2: 3, 4: 2, 6: 4 } as Record<number, number>)[data[9]!]!;
      expect(channels).toBeGreaterThan(0);
    }
    if (type === 'IDAT') idat.push(data);
    pos += 12 + len;
  }
  expect(types[0]).toBe('IHDR');
  expect(types.at(-1)).toBe('IEND');
  const raw = inflateSync(Buffer.concat(idat));
  const stride = width * channels;
  expect(raw.length).toBe(height * (stride + 1));
  const pixels = Buffer.alloc(height * stride);
  for (let y = 0; y < height; y++) {
    const filter = raw[y * (stride + 1)]!;
    if (filter > 4) throw new Error(`row ${y}: unknown filter ${filter}`);
    for (let i = 0; i < stride; i++) {
      const x = raw[y * (stride + 1) + 1 + i]!;
      const a = i >= channels ? pixels[y * stride + i - channels]! : 0;
      const b = y > 0 ? pixels[(y - 1) * stride + i]! : 0;
      const c = i >= channels && y > 0 ? pixels[(y - 1) * stride + i - channels]! : 0;
      const p = a + b - c;
      const paeth = Math.abs(p - a) <= Math.abs(p - b) && Math.abs(p - a) <= Math.abs(p - c) ? a : Math.abs(p - b) <= Math.abs(p - c) ? b : c;
      const predictor = filter === 0 ? 0 : filter === 1 ? a : filter === 2 ? b : filter === 3 ? (a + b) >> 1 : paeth;
      pixels[y * stride + i] = (x + predictor) & 0xff;
    }
  }
  return { width, height, dark: (x, y) => pixels[y * stride + x * channels]! < 128 };
}

describe('QR codes', () => {
  it('SVG: a standalone SVG document sized modules + quiet zone', async () => {
    const svg = await qrSvg(URL_TEXT);
    expect(svg.trimStart()).toMatch(/^(<\?xml|<svg)/);
    expect(XMLValidator.validate(svg)).toBe(true);
    const doc = new XMLParser({ ignoreAttributes: false }).parse(svg) as { svg: { '@_viewBox': string; '@_xmlns': string; path: unknown } };
    expect(doc.svg['@_xmlns']).toBe('http://www.w3.org/2000/svg');
    const size = QRCode.create(URL_TEXT, { errorCorrectionLevel: 'M' }).modules.size;
    expect(doc.svg['@_viewBox']).toBe(`0 0 ${size + 8} ${size + 8}`);
    expect(doc.svg.path).toBeDefined();
  });

  it('PNG: valid signature, IHDR dimensions, and pixels that are exactly the QR matrix of the link', async () => {
    const png = await qrPng(URL_TEXT);
    const img = decodePng(png);
    const modules = QRCode.create(URL_TEXT, { errorCorrectionLevel: 'M' }).modules;
    const scale = 8;
    const margin = 4;
    expect(img.width).toBe((modules.size + 2 * margin) * scale);
    expect(img.height).toBe(img.width);
    // IHDR read directly from its fixed offset too.
    expect(png.toString('latin1', 12, 16)).toBe('IHDR');
    expect(png.readUInt32BE(16)).toBe(img.width);
    expect(png.readUInt32BE(20)).toBe(img.height);
    let mismatches = 0;
    for (let r = 0; r < modules.size; r++) {
      for (let c = 0; c < modules.size; c++) {
        const centre = (m: number) => (margin + m) * scale + scale / 2;
        if (img.dark(centre(c), centre(r)) !== Boolean(modules.get(r, c))) mismatches++;
      }
    }
    expect(mismatches).toBe(0);
    for (let i = 0; i < margin * scale; i++) expect(img.dark(i, i)).toBe(false); // quiet zone is light
  });

  it('PNG data URL carries the same image', async () => {
    const url = await qrPngDataUrl(URL_TEXT);
    expect(url.startsWith('data:image/png;base64,')).toBe(true);
    const png = Buffer.from(url.slice('data:image/png;base64,'.length), 'base64');
    expect(png.subarray(0, 8).equals(PNG_SIGNATURE)).toBe(true);
    expect(decodePng(png).width).toBeGreaterThan(100);
  });

  it('refuses empty and over-long text', async () => {
    await expect(qrSvg('')).rejects.toThrow(RangeError);
    await expect(qrPng('x'.repeat(5000))).rejects.toThrow(RangeError);
  });
});
