/**
 * JSON.parse for text that may hold a secret (config files, route files,
 * settings): Node's own SyntaxError quotes the text around the mistake, so its
 * message is never shown; this one gives the position only.
 */
export class JsonSyntaxError extends Error {
  constructor(at: number | null) {
    super(`not valid JSON${at !== null ? ` (at character ${at})` : ''}`);
    this.name = 'JsonSyntaxError';
  }
}

export function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch (err) {
    const at = /position (\d+)/.exec((err as Error).message)?.[1];
    throw new JsonSyntaxError(at !== undefined ? Number(at) : null);
  }
}
