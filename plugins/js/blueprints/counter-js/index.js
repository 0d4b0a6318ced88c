// `counter-js`: the Rust `counter` example (plugins/rust/blueprints/counter)
// written in JavaScript. Counts visits per page in a data store shared by
// every job of the blueprint, and remembers who came last. No worker is
// involved.
//
// `POST /api/v1/jobs/counter-js {"page": "about", "name": "Ada"}` (`page`
// defaults to `home`, `name` to `anonymous`) runs `count`, which adds 1 to the
// page's counter in the store `visits`, reads the previous visitor from the
// store `visitors` (key `last_visitor`) and replaces it with `name`. It records
// `{"count": <the page's new count>, "previous_visitor": <name or null>}` and
// ends the job `finished`. With `"reset": true`, the page's counter is deleted
// first (so the count starts again at 1) and the history also gets
// `{"deleted": <whether the counter existed>}`.
//
// A store error (a `StoreError`) fails the handler, which the host retries.

import { blueprint, Describe, Next, State, Store } from '../../sdk/avtomatika.js';

export const handler = blueprint({
  describe: () =>
    new Describe('counter-js')
      .endpoint('v1', '/jobs/counter-js')
      .state(State.start('count').to('finished'))
      .state(State.finished('finished')),

  handle(job) {
    if (job.state !== 'count') {
      throw new Error(`counter-js has no handler for state ${job.state}`);
    }
    const { page = 'home', name = 'anonymous', reset } = job.initialData;
    // Two stores, so that no page name can collide with `last_visitor`.
    const visits = new Store('visits');
    const visitors = new Store('visitors');

    const history = {};
    if (reset === true) {
      history.deleted = visits.delete(page);
    }
    history.count = visits.increment(page);
    history.previous_visitor = visitors.get('last_visitor') ?? null;
    visitors.set('last_visitor', name);
    return Next.goTo('finished').withHistory(history);
  },
});
