// A small Node.js "guest service" instrumented the way a platform team would do it: the
// OpenTelemetry Node SDK, the pg instrumentation and the OTLP/HTTP protobuf exporter, configured
// by the standard OTEL_* variables (OTEL_SERVICE_NAME, OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, ...).
//
// It runs parameterized and literal-inlined statements against DATABASE_URL and, for the test,
// writes REPORT_FILE: every statement span as the SDK saw it (kept in memory by a second span
// processor) and the wall-clock time the service measured around each client.query() call.
//
//   DATABASE_URL=postgresql://... OTEL_SERVICE_NAME=guest-service-node \
//   OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=http://127.0.0.1:4318/v1/traces REPORT_FILE=out.json node service.js
'use strict';

const fs = require('node:fs');
const { NodeSDK } = require('@opentelemetry/sdk-node');
const { OTLPTraceExporter } = require('@opentelemetry/exporter-trace-otlp-proto');
const { PgInstrumentation } = require('@opentelemetry/instrumentation-pg');
const { BatchSpanProcessor, SimpleSpanProcessor, InMemorySpanExporter } = require('@opentelemetry/sdk-trace-base');

const memory = new InMemorySpanExporter();
const sdk = new NodeSDK({
  // the exporter reads OTEL_EXPORTER_OTLP_TRACES_ENDPOINT / _HEADERS / _COMPRESSION itself
  spanProcessors: [new BatchSpanProcessor(new OTLPTraceExporter()), new SimpleSpanProcessor(memory)],
  instrumentations: [
    new PgInstrumentation({
      // business context for dbopt: span attributes dbopt.vendor_category / dbopt.wedding_id
      requestHook: (span) => span.setAttribute('dbopt.vendor_category', 'venues'),
    }),
  ],
});
sdk.start();

// required after sdk.start() so the instrumentation patches it
const { Client } = require('pg');

const EMAIL = 'zoe.hartley@example.com';
const AMOUNT = '4321.99';
const WEDDING = 918273;

// [statement, values]: what the service runs, in order
const STATEMENTS = [
  ['CREATE TABLE guests (id serial PRIMARY KEY, email text NOT NULL, wedding_id int)', []],
  ['CREATE TABLE payments (id serial PRIMARY KEY, guest_id int, amount numeric(10, 2))', []],
  ['INSERT INTO guests (email, wedding_id) VALUES ($1, $2)', [EMAIL, WEDDING]],
  [`INSERT INTO guests (email, wedding_id) VALUES ('${EMAIL}', ${WEDDING})`, []],
  [`INSERT INTO payments (guest_id, amount) VALUES (1, ${AMOUNT})`, []],
  ['INSERT INTO payments (guest_id, amount) VALUES ($1, $2)', [2, AMOUNT]],
  ['SELECT g.id, p.amount FROM guests g JOIN payments p ON p.guest_id = g.id WHERE g.email = $1', [EMAIL]],
  [`SELECT g.id, p.amount FROM guests g JOIN payments p ON p.guest_id = g.id WHERE g.email = '${EMAIL}'`, []],
  [`UPDATE payments SET amount = ${AMOUNT} WHERE guest_id IN (SELECT id FROM guests WHERE email = '${EMAIL}')`, []],
  ['SELECT * FROM no_such_table WHERE email = $1', [EMAIL]],
];

async function main() {
  const client = new Client({ connectionString: process.env.DATABASE_URL });
  await client.connect();
  const calls = [];
  for (const [text, values] of STATEMENTS) {
    const started = process.hrtime.bigint();
    let error = null;
    try {
      await client.query(text, values);
    } catch (err) {
      error = err.code || 'error';
    }
    calls.push({ text, error, elapsed_ms: Number(process.hrtime.bigint() - started) / 1e6 });
  }
  await client.end();
  const spans = memory.getFinishedSpans().map((s) => ({
    name: s.name,
    kind: s.kind,
    attributes: s.attributes,
    trace_id: s.spanContext().traceId,
    span_id: s.spanContext().spanId,
    duration_ms: s.duration[0] * 1e3 + s.duration[1] / 1e6,
  }));
  await sdk.shutdown(); // flushes the batch to the OTLP endpoint (and clears the memory exporter)
  fs.writeFileSync(process.env.REPORT_FILE, JSON.stringify({ calls, spans }, null, 1));
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
