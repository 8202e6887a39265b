import { STATUS_CODES } from 'node:http';

/** The one catalogue of HTTP error codes: status and default message. */
export const HTTP_ERRORS = {
  unauthorized: { status: 401, message: 'A valid API key is required' },
  forbidden: { status: 403, message: 'This key may not do that' },
  not_found: { status: 404, message: 'Not found' },
  conflict: { status: 409, message: 'Conflicts with the current state' },
  key_limit: { status: 409, message: 'The account has as many active keys as it may hold' },
  gone: { status: 410, message: 'This setup link has been used or has expired; ask for a new one' },
  validation: { status: 400, message: 'The request is not valid' },
  bad_request: { status: 400, message: 'The request is not valid' },
  request_timeout: { status: 408, message: 'The request did not arrive in time' },
  payload_too_large: { status: 413, message: 'The request body is too large' },
  uri_too_long: { status: 414, message: 'A part of the URL is too long' },
  unsupported_media_type: { status: 415, message: 'Unsupported content type' },
  rate_limited: { status: 429, message: 'Too many requests; retry later' },
  headers_too_large: { status: 431, message: 'The request headers are too large' },
  store_unavailable: { status: 503, message: 'The key store is unavailable; retry later' },
  setup_unavailable: { status: 503, message: 'Client setup (signed profiles, setup links) is unavailable; retry later' },
  internal: { status: 500, message: 'Internal error' },
} as const;

export type HttpErrorCode = keyof typeof HTTP_ERRORS;

/** An error that carries its HTTP reply. Thrown by handlers; rendered by the one error handler. */
export class HttpError extends Error {
  readonly status: number;
  constructor(
    readonly code: HttpErrorCode,
    message?: string,
    readonly details?: unknown,
  ) {
    super(message ?? HTTP_ERRORS[code].message);
    this.status = HTTP_ERRORS[code].status;
  }
}

export function errorBody(code: string, message: string, details?: unknown) {
  return { error: details === undefined ? { code, message } : { code, message, details } };
}

/** A whole HTTP/1.1 error response as bytes, for answers written to the socket before Fastify has a request. */
export function rawErrorResponse(code: HttpErrorCode): string {
  const { status, message } = HTTP_ERRORS[code];
  const body = JSON.stringify(errorBody(code, message));
  return `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? 'Error'}\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`;
}
