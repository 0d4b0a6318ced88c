// `files-probe-js`: the Rust testing plugin `files-probe` in JavaScript, over
// the SDK's `files`. Runs the `task-files` operations listed in its initial
// data and records what each answered: `POST /api/v1/jobs/files-probe-js
// {"ops": [{"op": "write", "name": "a.txt", "text": "hi"}, {"op": "read",
// "name": "a.txt"}, …]}` (ops `list`, `read`, `write` (`text`, or `size`
// bytes of `x`), `delete`, `uri`, `adopt` (`source`, `name`)) ends `finished`
// with `{"results": [{"ok": …} | {"error": "<kind>: <message>"}, …]}`. With
// `"fail_on_error": true` the first error fails the handler instead.

import { blueprint, Describe, FileError, files, Next, State } from '../../sdk/avtomatika.js';

function run(op) {
  const name = op.name ?? '';
  switch (op.op) {
    case 'list':
      return files.list();
    case 'read':
      return files.readText(name);
    case 'write':
      return files.write(name, typeof op.size === 'number' ? 'x'.repeat(op.size) : (op.text ?? ''));
    case 'delete':
      return files.delete(name);
    case 'uri':
      return files.uri(name);
    case 'adopt':
      return files.adopt(op.source ?? '', name);
    default:
      return `unknown op ${JSON.stringify(op.op)}`;
  }
}

export const handler = blueprint({
  describe: () =>
    new Describe('files-probe-js')
      .endpoint('v1', '/jobs/files-probe-js')
      .state(State.start('start').to('finished'))
      .state(State.finished('finished')),

  handle(job) {
    const results = [];
    for (const op of job.initialData.ops ?? []) {
      try {
        results.push({ ok: run(op) });
      } catch (error) {
        if (!(error instanceof FileError) || job.initialData.fail_on_error === true) throw error;
        results.push({ error: error.message });
      }
    }
    return Next.goTo('finished').withHistory({ results });
  },
});
