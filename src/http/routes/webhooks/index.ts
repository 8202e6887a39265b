import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import { endpointUrlProblem, MAX_SECRET, MAX_URL, MIN_SECRET } from '../../../events/endpoints.js';
import { EVENT_TYPES, type EventType } from '../../../events/types.js';
import type { Webhooks } from '../../../events/webhooks.js';
import { HttpError } from '../../errors.js';
import { AUTH_ERRORS, ErrorBody, KEY_SECURITY, Nullable, NullableInput } from '../../schemas.js';
import { adminRead, adminWrite } from '../accounts/index.js';

const EventName = Type.Enum([...EVENT_TYPES]);

const Status = Type.Object({
  at: Type.String({ format: 'date-time' }),
  eventId: Type.String(),
  eventType: Type.String(),
  ok: Type.Boolean(),
  status: Nullable(Type.Integer({ description: "the receiver's HTTP status; null when none came" })),
  error: Nullable(Type.String()),
  attempt: Type.Integer(),
});

export const WebhookView = Type.Object({
  id: Type.String(),
  url: Type.String(),
  events: Nullable(Type.Array(EventName, { description: 'null: every event' })),
  createdAt: Type.String({ format: 'date-time' }),
  source: Type.Union([Type.Literal('config'), Type.Literal('api')]),
  lastDelivery: Nullable(Status),
  pending: Type.Integer({ description: 'deliveries queued or waiting for a retry' }),
});

/** Webhook endpoints, for administrator keys. The signing secret is shown once, when an endpoint is created. */
export const webhookRoutes: FastifyPluginAsyncTypebox<{ webhooks: Webhooks | undefined }> = async (app, { webhooks }) => {
  const service = (): Webhooks => {
    if (!webhooks) throw new HttpError('store_unavailable', 'Webhooks are not running on this instance');
    return webhooks;
  };
  const common = { tags: ['webhooks'], security: KEY_SECURITY };

  app.get(
    '/api/webhooks',
    {
      config: { auth: adminRead },
      schema: { ...common, summary: 'List webhook endpoints with their last delivery', response: { 200: Type.Object({ webhooks: Type.Array(WebhookView) }), ...AUTH_ERRORS } },
    },
    async () => ({ webhooks: await service().list() }),
  );

  app.post(
    '/api/webhooks',
    {
      config: { auth: adminWrite },
      schema: {
        ...common,
        summary: 'Register a webhook endpoint',
        body: Type.Object(
          {
            url: Type.String({ minLength: 1, maxLength: MAX_URL }),
            events: Type.Optional(NullableInput(Type.Array(EventName, { minItems: 1, maxItems: EVENT_TYPES.length, uniqueItems: true }))),
            secret: Type.Optional(Type.String({ minLength: MIN_SECRET, maxLength: MAX_SECRET, description: 'default: one is generated' })),
          },
          { additionalProperties: false },
        ),
        response: { 201: Type.Object({ ...WebhookView.properties, secret: Type.String({ description: 'the signing secret: shown only in this answer' }) }), 400: ErrorBody, ...AUTH_ERRORS },
      },
    },
    async (req, reply) => {
      const problem = endpointUrlProblem(req.body.url);
      if (problem) throw new HttpError('validation', `url: expected ${problem}`, [{ field: 'body.url', message: `expected ${problem}` }]);
      const { endpoint, secret } = await service().add({
        url: req.body.url,
        ...(req.body.secret !== undefined && { secret: req.body.secret }),
        events: (req.body.events ?? null) as EventType[] | null,
      });
      return reply.code(201).header('cache-control', 'no-store').send({ ...endpoint, secret });
    },
  );

  app.delete(
    '/api/webhooks/:id',
    {
      config: { auth: adminWrite },
      schema: {
        ...common,
        summary: 'Remove a webhook endpoint registered through the API, and its queued deliveries',
        params: Type.Object({ id: Type.String({ minLength: 1, maxLength: 100 }) }),
        response: { 204: Type.Null(), 404: ErrorBody, ...AUTH_ERRORS },
      },
    },
    async (req, reply) => {
      if (!(await service().remove(req.params.id))) throw new HttpError('not_found', 'No such webhook (configured ones are removed in the configuration)');
      return reply.code(204).send(null);
    },
  );
};
