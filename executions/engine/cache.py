"""The step cache: never the same image twice.

An item of a deterministic component is known by a key, the SHA-256 of what decides its outputs:
the component (name, version, runner, image), its parameters (defaults applied) and the
checksums of its input files, in order. When an item with that key has completed before, the
next one does not run: it gets new File rows of its own run's owner that point at the objects
the first one stored (`cache_materialize`), recorded in the same statement that completes it.

Reference counting, not copying: a row is one reference to its object, and so is a cache
entry (`StepCacheEntry.storage_paths`); files.services.file_delete deletes an object only once
nothing names it. A hit therefore costs one lookup statement and one insert, no object-store
request and no decode, whatever the images' size; a copy would cost a request per output and
the bytes twice in the store. An entry keeps its objects alive after their rows are gone, so
the least recently used entries are evicted down to STEP_CACHE_MAX_BYTES (`cache_evict`, beat),
and the objects no row and no entry names any more are deleted then.

Totals (hits, misses, entries, bytes) live in StepCacheCounter's slots, moved by the same
statements that find, add and evict entries: the statistics are a sum over a few rows, and
there is no single row every worker waits for. PostgreSQL rather than Redis, so a hit and its
count are one statement and Redis being down changes nothing.

Used by the item life cycle (executions/engine/items.py); docs/engine.md, "Step cache".
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import uuid
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from executions.engine.errors import TransientStepError
from executions.engine.runners import StepContext
from files.inspection import sanitize_file_name
from files.models import File
from registry.models import Component, ComponentKind, ComponentRunner

logger = logging.getLogger(__name__)

# Part of every key: a change of what the key covers must not find old entries.
KEY_VERSION = 1
# Counter rows a writer picks from at random (StepCacheCounter.slot).
COUNTER_SLOTS = 16
# A hit moves last_used_at only when it is older than this: LRU to the minute is plenty for an
# eviction every few minutes, and an unchanged indexed column lets the row be updated in place.
TOUCH_INTERVAL_SECONDS = 60
# Metadata a stored output gets from its run (StepContext.store_output), not from its bytes:
# not kept in an entry, written afresh by each materialization.
RUN_TAGS = frozenset({"execution_id", "step_id", "node_id", "attempt", "item", "cache_key"})
# Entries one eviction transaction looks at (and locks) at a time.
EVICT_BATCH = 500


class CacheEntryGone(TransientStepError):
    """The entry was evicted between the lookup and the materialization: run the item instead.
    Transient, so an item life cycle that does not catch it tries the item again later, and that
    attempt's lookup misses."""


@dataclass
class CacheHit:
    key: str
    item_id: int | None  # the StepItem whose outputs these are (None once it is deleted)
    outputs: list[dict[str, Any]]  # descriptors: name, mime_type, size, storage_path, checksum, metadata


def _slot() -> int:
    return random.randrange(COUNTER_SLOTS)


def cache_key(*, component: Component, parameters: dict, inputs: list[File]) -> str | None:
    """The item's key, or None when its outputs may not be reused: the component is not
    deterministic, the cache is off (STEP_CACHE_ENABLED), or an input has no checksum."""
    if not settings.STEP_CACHE_ENABLED or not component.deterministic:
        return None
    checksums = [source.checksum for source in inputs]
    if not all(checksums):
        return None
    document = {"v": KEY_VERSION,
                "component": [component.name, component.version, component.runner, component.docker_image],
                "parameters": parameters, "inputs": [checksum.lower() for checksum in checksums]}
    try:
        canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError):  # parameters JSON cannot say exactly: not keyed, never a wrong hit
        return None
    return hashlib.sha256(canonical.encode()).hexdigest()


_LOOKUP_SQL = """
WITH hit AS (
    UPDATE step_cache
       SET hits = hits + 1,
           last_used_at = CASE WHEN last_used_at < now() - make_interval(secs => %(touch)s) THEN now()
                               ELSE last_used_at END
     WHERE key = %(key)s
 RETURNING key, item_id, outputs
), counted AS (
    INSERT INTO step_cache_counters (slot, hits) SELECT %(slot)s, 1 FROM hit
    ON CONFLICT (slot) DO UPDATE SET hits = step_cache_counters.hits + 1
)
SELECT key, item_id, outputs FROM hit
"""


def cache_lookup(key: str) -> CacheHit | None:
    """The entry of `key`, counting the hit and touching its last use, in one statement; None
    when there is none (count it with cache_miss). Call it outside a long transaction: the
    counted rows stay locked until the caller commits."""
    with connection.cursor() as cursor:
        cursor.execute(_LOOKUP_SQL, {"key": key, "slot": _slot(), "touch": TOUCH_INTERVAL_SECONDS})
        row = cursor.fetchone()
    if row is None:
        return None
    outputs = json.loads(row[2]) if isinstance(row[2], (str, bytes)) else row[2]
    return CacheHit(key=row[0], item_id=row[1], outputs=outputs)


def cache_miss(count: int = 1) -> None:
    """Count `count` lookups that found nothing (the hit rate's denominator, with the hits)."""
    if count <= 0:
        return
    with connection.cursor() as cursor:
        cursor.execute("INSERT INTO step_cache_counters (slot, misses) VALUES (%s, %s) "
                       "ON CONFLICT (slot) DO UPDATE SET misses = step_cache_counters.misses + EXCLUDED.misses",
                       [_slot(), count])


# The entry is locked (FOR KEY SHARE) by the statement that inserts the rows naming its objects,
# so an eviction cannot delete it and release the objects before those rows are committed; an
# entry evicted already gives no row to insert.
_MATERIALIZE_SQL = """
WITH entry AS (SELECT key FROM step_cache WHERE key = %(key)s FOR KEY SHARE)
INSERT INTO files (id, original_name, mime_type, file_size, storage_path, checksum, metadata, created_at, created_by)
SELECT r.id, r.original_name, r.mime_type, r.file_size, r.storage_path, r.checksum, r.metadata, r.created_at,
       r.created_by
  FROM entry, jsonb_to_recordset(%(rows)s::jsonb) AS r(id uuid, original_name text, mime_type text, file_size bigint,
                                                      storage_path text, checksum text, metadata jsonb,
                                                      created_at timestamptz, created_by uuid)
"""


def cache_materialize(hit: CacheHit, *, context: StepContext) -> list[File]:
    """New File rows of `context.created_by_id`, one per cached output in order, naming the same
    objects; tagged as StepContext.store_output tags an output (plus "cache_key"), appended to
    `context.created_files` (so a discarded result deletes them, which releases only these
    references) and recorded in `context.derived_from`. One insert; no object-store request, no
    decode. Their thumbnails are made when a page asks (thumbnails are per file id).

    Raises CacheEntryGone when the entry was evicted since the lookup: nothing was inserted."""
    if not hit.outputs:
        return []
    step, inputs = context.step, context.inputs
    component = step.component
    tags = {"execution_id": str(step.execution_id), "step_id": str(step.pk), "node_id": step.node_id,
            "attempt": context.attempt, "cache_key": hit.key}
    item = getattr(context, "item", None)
    if item is not None:
        tags["item"] = item.index
    one_to_one = component.kind == ComponentKind.MAP and len(hit.outputs) == len(inputs)
    # A built-in names its outputs after their source and the node (StepContext.output_name):
    # named as this run would have named them, not as the first run did.
    rename = component.runner == ComponentRunner.BUILTIN
    now = timezone.now()
    made: list[File] = []
    for index, output in enumerate(hit.outputs):
        file_id = uuid.uuid4()
        suffix = PurePosixPath(output.get("name") or "").suffix
        if rename:
            source = inputs[index] if one_to_one else (inputs[0] if inputs else None)
            name = sanitize_file_name(context.output_name(source, suffix), fallback=f"{file_id.hex}{suffix}")
        else:
            name = output.get("name")
        made.append(File(id=file_id, original_name=name, mime_type=output.get("mime_type"), file_size=output.get("size"),
                         storage_path=output["storage_path"], checksum=output.get("checksum"),
                         metadata={**(output.get("metadata") or {}), **tags}, created_at=now,
                         created_by_id=context.created_by_id))
    rows = [{"id": str(f.id), "original_name": f.original_name, "mime_type": f.mime_type, "file_size": f.file_size,
             "storage_path": f.storage_path, "checksum": f.checksum, "metadata": f.metadata,
             "created_at": now.isoformat(), "created_by": str(f.created_by_id) if f.created_by_id else None}
            for f in made]
    with connection.cursor() as cursor:
        cursor.execute(_MATERIALIZE_SQL, {"key": hit.key, "rows": json.dumps(rows)})
        inserted = cursor.rowcount
    if inserted != len(made):
        raise CacheEntryGone(hit.key)
    all_inputs = [str(source.id) for source in inputs]
    for index, stored in enumerate(made):
        stored._state.adding, stored._state.db = False, connection.alias
        context.created_files.append(stored)
        context.derived_from[str(stored.id)] = [str(inputs[index].id)] if one_to_one else all_inputs
    return made


# The output rows are locked (FOR KEY SHARE) while the entry naming their objects is inserted: a
# deletion of one of them waits, then sees the entry and keeps the object; a row deleted already
# means no entry (its object may be gone).
_RECORD_SQL = """
WITH live AS (SELECT id FROM files WHERE id = ANY(%(ids)s::uuid[]) FOR KEY SHARE),
entry AS (
    INSERT INTO step_cache (key, component_name, component_version, outputs, storage_paths, bytes, item_id, hits,
                            created_at, last_used_at)
    SELECT %(key)s, %(name)s, %(version)s, %(outputs)s::jsonb, %(paths)s::text[], %(bytes)s, %(item)s, 0, now(), now()
     WHERE (SELECT count(*) FROM live) = %(count)s
    ON CONFLICT (key) DO NOTHING
    RETURNING bytes
)
INSERT INTO step_cache_counters (slot, entries, bytes) SELECT %(slot)s, 1, bytes FROM entry
ON CONFLICT (slot) DO UPDATE SET entries = step_cache_counters.entries + 1,
                                 bytes = step_cache_counters.bytes + EXCLUDED.bytes
"""


def cache_record(*, key: str, item_id, outputs: list[File], component: Component) -> None:
    """Keep the outputs of an item whose completion won under `key` (the first one wins; a second
    record of the key does nothing). Its size is the outputs' sizes summed. Nothing is kept for
    an item without outputs, or when one of the output rows is gone already."""
    if not outputs or any(f.pk is None for f in outputs):  # no outputs, or a row deleted in this process
        return
    descriptors = [{"name": f.original_name, "mime_type": f.mime_type, "size": f.file_size,
                    "storage_path": f.storage_path, "checksum": f.checksum,
                    "metadata": {k: v for k, v in (f.metadata or {}).items() if k not in RUN_TAGS}} for f in outputs]
    ids = sorted({str(f.id) for f in outputs})
    with connection.cursor() as cursor:
        cursor.execute(_RECORD_SQL, {
            "ids": ids, "count": len(ids), "key": key, "name": component.name, "version": component.version,
            "outputs": json.dumps(descriptors), "paths": list(dict.fromkeys(f.storage_path for f in outputs)),
            "bytes": sum(f.file_size or 0 for f in outputs), "item": item_id, "slot": _slot()})


def cache_referenced_paths(keys: list[str]) -> set[str]:
    """The object keys among `keys` that an entry names (files.services' referrer, via the GIN
    index of storage_paths)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT DISTINCT path FROM step_cache, unnest(storage_paths) AS path "
                       "WHERE storage_paths && %(keys)s::text[] AND path = ANY(%(keys)s::text[])", {"keys": keys})
        return {row[0] for row in cursor.fetchall()}


_EVICT_SQL = """
WITH gone AS (DELETE FROM step_cache WHERE key = ANY(%(keys)s::text[]) RETURNING storage_paths, bytes),
counted AS (
    INSERT INTO step_cache_counters (slot, entries, bytes) SELECT %(slot)s, -count(*), -coalesce(sum(bytes), 0) FROM gone
    ON CONFLICT (slot) DO UPDATE SET entries = step_cache_counters.entries + EXCLUDED.entries,
                                     bytes = step_cache_counters.bytes + EXCLUDED.bytes
)
SELECT storage_paths, bytes FROM gone
"""


def cache_evict() -> dict:
    """Evict least recently used entries until the cache holds at most STEP_CACHE_MAX_BYTES, then
    delete the objects of the evicted entries that no File row and no remaining entry names.

    The total is the table's own sum (a scan once per beat interval; the counters are for the
    statistics). Entries locked by a lookup or a materialization going on are skipped (SKIP
    LOCKED), not waited for: they are in use. Returns what was done and what is left."""
    from files.services import file_objects_release

    budget = settings.STEP_CACHE_MAX_BYTES
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*), coalesce(sum(bytes), 0) FROM step_cache")
        entries, total = cursor.fetchone()
    evicted = freed = 0
    released: list[str] = []
    while total > budget:
        excess = total - budget
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SELECT key, bytes FROM step_cache ORDER BY last_used_at, key LIMIT %s "
                           "FOR UPDATE SKIP LOCKED", [EVICT_BATCH])
            chosen: list[str] = []
            for key, size in cursor.fetchall():
                if excess <= 0:
                    break
                chosen.append(key)
                excess -= size
            if not chosen:
                break
            cursor.execute(_EVICT_SQL, {"keys": chosen, "slot": _slot()})
            gone = cursor.fetchall()
            if not gone:
                break
            paths = [path for storage_paths, _ in gone for path in storage_paths]
            # After the commit, so the check sees every reference committed by then.
            transaction.on_commit(lambda paths=paths: released.extend(file_objects_release(keys=paths)))
        evicted += len(gone)
        freed += sum(size for _, size in gone)
        entries, total = entries - len(gone), total - sum(size for _, size in gone)
    result = {"evicted": evicted, "bytes_freed": freed, "objects_deleted": len(released), "entries": entries,
              "bytes": total, "max_bytes": budget}
    if evicted:
        logger.info("step cache: evicted %(evicted)s entries (%(bytes_freed)s bytes), deleted %(objects_deleted)s "
                    "objects; %(entries)s entries, %(bytes)s of %(max_bytes)s bytes left", result)
    return result


def cache_stats() -> dict:
    """{"enabled", "entries", "bytes", "max_bytes", "hits", "misses", "hit_rate"}: the counters'
    sums (a few rows, whatever the cache's size). hit_rate is hits / (hits + misses), None before
    the first lookup."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT coalesce(sum(entries), 0), coalesce(sum(bytes), 0), coalesce(sum(hits), 0), "
                       "coalesce(sum(misses), 0) FROM step_cache_counters")
        entries, size, hits, misses = (int(value) for value in cursor.fetchone())
    lookups = hits + misses
    return {"enabled": settings.STEP_CACHE_ENABLED, "entries": entries, "bytes": size,
            "max_bytes": settings.STEP_CACHE_MAX_BYTES, "hits": hits, "misses": misses,
            "hit_rate": round(hits / lookups, 4) if lookups else None}
