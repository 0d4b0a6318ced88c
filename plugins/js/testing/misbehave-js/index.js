// `misbehave-js`: a JavaScript blueprint that breaks the rules on request, for
// the host's sandbox tests (tests/tests/js_blueprints.rs). The start handler
// does what `initial_data.mode` asks:
//
// - `"error"`: throws an Error, which the SDK turns into a handler error;
// - `"loop"`: spins forever (the CPU time limit must stop it);
// - `"bomb"`: allocates without bound (the memory limit must stop it);
// - anything else, or no mode: moves to `finished` with `{"ok": true}`.

import { blueprint, Describe, log, Next, State } from '../../sdk/avtomatika.js';

export const handler = blueprint({
  describe: () =>
    new Describe('misbehave-js')
      .endpoint('v1', '/jobs/misbehave-js')
      .state(State.start('start').to('finished'))
      .state(State.finished('finished')),

  handle(job) {
    switch (job.initialData.mode) {
      case 'error':
        throw new Error('misbehave-js: deliberate handler error');
      case 'loop':
        return spin();
      case 'bomb':
        return hoard();
      default:
        log.info('misbehave-js behaves', { mode: String(job.initialData.mode) });
        return Next.goTo('finished').withHistory({ ok: true });
    }
  },
});

// The counter escapes into a global, so the engine cannot prove the loop idle.
function spin() {
  for (;;) {
    globalThis.spins = (globalThis.spins ?? 0) + 1;
  }
}

// Each block is a fresh typed array filled with non-zero bytes, so every page
// is written, and all of them stay reachable, so the GC can free none.
function hoard() {
  const blocks = [];
  for (;;) {
    blocks.push(new Uint8Array(1 << 20).fill(0xa5));
  }
}
