// `pipeline-js`: the Rust `pipeline` example (plugins/rust/blueprints/pipeline)
// written in JavaScript. Fetches a document through one worker, measures it,
// and hands the measurement to another.
//
// `POST /api/v1/jobs/pipeline-js {"url": "https://example.com"}` dispatches a
// `fetch` task with `{"url": ...}`. The worker's `success` data (expected:
// `{"content": "..."}`) joins the state history, and `transform` records the
// content's length in characters, or fails the job if there is no content.
// `publish` then dispatches a priority-5 `publish` task with `{"length": ...}`;
// its `success` ends the job `finished`. A `failure` follows its error code.

import { blueprint, Describe, Next, State, Strategy, Task } from '../../sdk/avtomatika.js';

export const handler = blueprint({
  describe: () =>
    new Describe('pipeline-js')
      .endpoint('v1', '/jobs/pipeline-js')
      .state(State.start('fetch').to('transform', 'failed'))
      // `Next.fail` ends the job without a transition, so none is declared for it.
      .state(new State('transform').to('publish'))
      .state(new State('publish').to('finished', 'failed'))
      .state(State.finished('finished'))
      .state(State.failed('failed')),

  handle(job) {
    switch (job.state) {
      case 'fetch':
        return Next.dispatch(
          new Task('fetch', { url: job.initialData.url ?? null }).on('success', 'transform').on('failure', 'failed'),
        );
      case 'transform': {
        const content = job.history.content;
        if (typeof content !== 'string' || content === '') {
          return Next.fail('fetch returned no content');
        }
        // Characters, as Rust's `chars().count()`: code points, not UTF-16 units.
        return Next.goTo('publish').withHistory({ length: [...content].length });
      }
      case 'publish':
        return Next.dispatch(
          new Task('publish', { length: job.history.length ?? null })
            .on('success', 'finished')
            .on('failure', 'failed')
            .priority(5)
            // Routing (contract 1.1.0): the publisher with the fewest tasks in
            // flight, and ten minutes for its answer.
            .strategy(Strategy.LEAST_CONNECTIONS)
            .timeoutSeconds(600),
        );
      default:
        throw new Error(`pipeline-js has no handler for state ${job.state}`);
    }
  },
});
