"""Signals sent after a status change of an execution or a step has been committed.

The engine sends them (from `transaction.on_commit`); progress publishing and other
observers connect receivers, so the engine does not know who listens.
"""

from django.dispatch import Signal

# kwargs: execution_id (UUID), status (str), previous_status (str); optional progress: the run's
# counts as the change's own statement saw them ({"execution_status", "completed_steps",
# "total_steps"}), so observers need not read them again.
execution_status_changed = Signal()

# kwargs: execution_id (UUID), step_id (UUID), node_id (str), status (str), previous_status (str);
# optional progress as above.
step_status_changed = Signal()

# kwargs: execution_id (UUID), step_id (UUID), node_id (str), items: the step's item counts after
# the change ({"total", "completed", "failed", "skipped", "cached"}). Sent for every finished item;
# publishers coalesce them (a run of 100,000 items must not send 100,000 events).
step_items_progressed = Signal()
