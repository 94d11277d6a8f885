const { test, before, after } = require('node:test');
const assert = require('node:assert');
const { Client, Pool } = require('pg');
const { createHandler, DEFAULT_PROMPT } = require('./app');

const base = { host: process.env.PGHOST || '/tmp/ab_testing_pg', port: Number(process.env.PGPORT || 5499), user: 'postgres' };
const DB = 'ab_node_example';
let pool;

before(async () => {
  const admin = new Client({ ...base, database: 'postgres' });
  await admin.connect();
  await admin.query(`DROP DATABASE IF EXISTS ${DB} WITH (FORCE)`);
  await admin.query(`CREATE DATABASE ${DB}`);
  await admin.end();
  pool = new Pool({ ...base, database: DB, max: 4 });
  await pool.query('CREATE EXTENSION ab_testing');
  await pool.query('SELECT ab_create_experiment($1)', [JSON.stringify({
    name: 'node', experiment_type: 'prompt', primary_metric: 'resolution_rate',
    variants: [
      { name: 'Control', is_control: true, traffic_allocation: 45, config: { system_prompt: 'Current prompt...' } },
      { name: 'Treatment', traffic_allocation: 45, config: { system_prompt: 'New prompt with examples...' } }],
  })]);
  await pool.query("SELECT ab_start_experiment('node')");
});

after(async () => {
  // pool.end() resolves before its connections have closed; wait for each one, so that dropping
  // the database does not terminate a connection still closing (an uncaught error after the test).
  let open = pool.totalCount;
  const closed = new Promise((resolve) => {
    if (open === 0) resolve();
    pool.on('remove', () => { open -= 1; if (open === 0) resolve(); });
  });
  await pool.end();
  await closed;
  const admin = new Client({ ...base, database: 'postgres' });
  await admin.connect();
  await admin.query(`DROP DATABASE IF EXISTS ${DB}`);
  await admin.end();
});

test('a handler assigns, answers and records in one transaction', async () => {
  const handle = createHandler(pool, 'node');
  const seen = new Map();
  await Promise.all(Array.from({ length: 100 }, (_, i) =>
    handle({ userId: `user-${i}`, message: `question ${i}` }).then((out) => seen.set(`user-${i}`, out))));
  const enrolled = [...seen.values()].filter((o) => o.variant !== null).length;
  assert.ok(enrolled > 70 && enrolled < 100, `enrolled ${enrolled}`);
  for (const out of seen.values()) {
    if (out.variant === null) assert.strictEqual(out.prompt, DEFAULT_PROMPT);
  }
  const { rows } = await pool.query('SELECT count(*)::int AS n FROM ab_results');
  assert.strictEqual(rows[0].n, enrolled);
  // The same user keeps the same variant.
  const again = await handle({ userId: 'user-7', message: 'again' });
  assert.strictEqual(again.variant, seen.get('user-7').variant);
});
