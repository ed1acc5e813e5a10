"""The execution engine. Its modules depend one way, each only on those listed before it:

- `errors`: the step exceptions (`StepFailure`, `TransientStepError`, `is_transient`) and
  `InvalidTransition`;
- `statements`: the hot path's SQL (fetch, claim, complete a step);
- `runners/`: how a component's work is done (built-in Pillow operations, external processes,
  the HTTP runner);
- `transitions`: the state machine's guarded moves, the run's row lock, skipping and finishing;
- `monitor`: the per-process thread of heartbeats and memory samples;
- `delivery`: sending the task of a ready step (by its Celery name; the outbox on failure);
- `lifecycle`: a worker's claim -> run -> complete or fail of one step;
- `recovery`: the periodic sweep.

Above the engine: `executions.services` (the request commands start, cancel, retry) and
`executions.tasks` (the Celery entry points). See docs/engine.md.
"""
