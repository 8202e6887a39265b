import { Type } from 'typebox';
import { isActive, type KeyRecord } from '../keys/record.js';

/** Shared response shapes. */
export const ErrorBody = Type.Object({
  error: Type.Object({ code: Type.String(), message: Type.String(), details: Type.Optional(Type.Unknown()) }),
});

export const Nullable = <T extends Parameters<typeof Type.Union>[0][number]>(t: T) => Type.Union([t, Type.Null()]);

export const TokenView = Type.Object({
  id: Type.String(),
  description: Type.String(),
  account: Nullable(Type.String()),
  scopes: Type.Array(Type.String()),
  createdAt: Type.String({ format: 'date-time' }),
  expiresAt: Nullable(Type.String({ format: 'date-time' })),
  allowedIps: Nullable(Type.Array(Type.String())),
  revokedAt: Nullable(Type.String({ format: 'date-time' })),
  lastUsedAt: Nullable(Type.String({ format: 'date-time' })),
  lastUsedIp: Nullable(Type.String()),
  lastUsedProtocol: Nullable(Type.String()),
  isActive: Type.Boolean(),
});

export function tokenView(k: KeyRecord) {
  return {
    id: k.id,
    description: k.name,
    account: k.account,
    scopes: k.scopes,
    createdAt: k.createdAt,
    expiresAt: k.expiresAt,
    allowedIps: k.allowedIps,
    revokedAt: k.revokedAt,
    lastUsedAt: k.lastUsedAt,
    lastUsedIp: k.lastUsedIp,
    lastUsedProtocol: k.lastUsedProtocol,
    isActive: isActive(k),
  };
}

/** Standard error responses for authenticated routes, for OpenAPI. */
export const AUTH_ERRORS = { 401: ErrorBody, 403: ErrorBody, 429: ErrorBody } as const;
