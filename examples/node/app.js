// A request handler that takes the system prompt from ab_get_variant and records the outcome
// with ab_record_result, in one transaction with the handler's own work.
const http = require('node:http');
const { Pool } = require('pg');

const DEFAULT_PROMPT = 'You are a helpful mortgage assistant.';

function standInLlm(prompt, message) {
  return { text: `[${prompt.slice(0, 20)}] answer to ${message}`, resolved: (prompt.length + message.length) % 3 !== 0 };
}

function createHandler(pool, experiment) {
  return async function handle({ userId, message }) {
    const client = await pool.connect();
    try {
      await client.query('BEGIN');
      const { rows } = await client.query('SELECT ab_get_variant($1, $2) AS v', [experiment, userId]);
      const variant = rows[0].v; // parsed jsonb, or null when the user is not enrolled
      const prompt = variant ? variant.config.system_prompt : DEFAULT_PROMPT;
      const answer = standInLlm(prompt, message);
      await client.query('SELECT ab_record_result($1, $2, $3, $4)',
        [experiment, 'resolution_rate', answer.resolved ? 1 : 0, userId]);
      await client.query('COMMIT');
      return { variant: variant ? variant.variant : null, prompt, answer: answer.text };
    } catch (err) {
      await client.query('ROLLBACK');
      throw err;
    } finally {
      client.release();
    }
  };
}

// node app.js: POST {"userId": "...", "message": "..."} to http://127.0.0.1:8080/chat
if (require.main === module) {
  const pool = new Pool();
  const handle = createHandler(pool, process.env.AB_EXPERIMENT || 'Lead Qualification Prompt Test');
  http.createServer(async (req, res) => {
    let body = '';
    for await (const chunk of req) body += chunk;
    try {
      const out = await handle(JSON.parse(body));
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(out));
    } catch (err) {
      res.writeHead(500, { 'content-type': 'application/json' }).end(JSON.stringify({ error: err.message }));
    }
  }).listen(8080, '127.0.0.1');
}

module.exports = { createHandler, DEFAULT_PROMPT };
