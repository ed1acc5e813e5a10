"""Object-store event notifications: objects written straight into the bucket become files
(docs/automation.md#object-store-events).

MinIO (`mc event add ... arn:minio:sqs::<id>:webhook`) and AWS (S3 -> SNS -> an HTTPS
subscription) POST S3 event records; each `ObjectCreated` record of OBJECT_EVENTS_BUCKET under
`OBJECT_EVENTS_PREFIX<username>/` is read from the store, validated exactly as an upload (the bytes
sniffed, checked, hashed), stored as a new file of that user under a fresh key, and announced to
the upload hooks (triggers) in the same transaction. The same object notified twice (same key,
same bytes) is registered once: an advisory lock on (bucket, key, checksum) and a look for a file
with that source.
"""

from __future__ import annotations

import hmac
import json
import logging
import tempfile
from dataclasses import dataclass
from urllib.parse import unquote_plus

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.files.storage import default_storage
from django.db import connection, transaction

from .inspection import sha256_of
from .models import File

logger = logging.getLogger(__name__)


@dataclass
class ObjectRecord:
    bucket: str
    key: str
    size: int | None
    event: str


def object_events_token_valid(header: str | None) -> bool:
    """`Authorization: Bearer <OBJECT_EVENTS_TOKEN>` (what MinIO sends for its webhook target's
    auth_token), compared in constant time. No token configured: nothing is accepted."""
    token = settings.OBJECT_EVENTS_TOKEN
    if not token or not header:
        return False
    given = header.split(" ", 1)[1] if header.lower().startswith("bearer ") else header
    return hmac.compare_digest(given.strip().encode(), token.encode())


def object_records(body: dict) -> list[ObjectRecord]:
    """The S3 records of a notification: MinIO's (`EventName`, `Key`, `Records`), AWS's
    (`Records`), or an SNS envelope (`Type: Notification`, the S3 event as the `Message` string).
    Raises ValidationError when it is none of them."""
    if not isinstance(body, dict):
        raise ValidationError({"Records": ["Not an S3 event notification."]})
    if body.get("Type") == "Notification" and isinstance(body.get("Message"), str):
        try:
            body = json.loads(body["Message"])
        except ValueError:
            raise ValidationError({"Message": ["The SNS message is not JSON."]}) from None
        if not isinstance(body, dict):
            raise ValidationError({"Message": ["Not an S3 event notification."]})
    if body.get("Type") == "SubscriptionConfirmation":
        # AWS SNS asks once whether this endpoint wants the topic: an operator confirms it by
        # opening SubscribeURL (logged), the server does not fetch URLs it is sent.
        logger.warning("SNS subscription confirmation for topic %s: open %s to confirm",
                       body.get("TopicArn"), body.get("SubscribeURL"))
        return []
    if body.get("Event") == "s3:TestEvent":
        return []
    records = body.get("Records")
    if not isinstance(records, list):
        raise ValidationError({"Records": ["Not an S3 event notification: no Records list."]})
    found = []
    for record in records[:1000]:
        try:
            event = str(record["eventName"])
            s3 = record["s3"]
            found.append(ObjectRecord(bucket=str(s3["bucket"]["name"]), key=unquote_plus(str(s3["object"]["key"])),
                                      size=s3["object"].get("size"), event=event))
        except (KeyError, TypeError):
            raise ValidationError({"Records": ["A record without eventName, s3.bucket.name, s3.object.key."]}) from None
    return found


def _owner_of(key: str):
    prefix = settings.OBJECT_EVENTS_PREFIX
    if not key.startswith(prefix):
        return None, f"not under {prefix}"
    username, _, rest = key[len(prefix):].partition("/")
    if not username or not rest:
        return None, f"not {prefix}<username>/<name>"
    user = get_user_model().objects.filter(username=username, is_active=True).first()
    return (user, None) if user else (None, "no such user")


def object_register(record: ObjectRecord) -> tuple[File | None, str]:
    """Register one created object as a file (or say why not). Returns (file, outcome)."""
    from .services import file_store, file_uploaded_announce

    if "ObjectCreated" not in record.event:
        return None, "not an ObjectCreated event"
    if record.bucket != settings.OBJECT_EVENTS_BUCKET:
        return None, f"bucket {record.bucket} is not {settings.OBJECT_EVENTS_BUCKET}"
    owner, why = _owner_of(record.key)
    if owner is None:
        return None, why
    source = default_storage.bucket.Object(record.key)
    if source.content_length > settings.FILE_UPLOAD_MAX_BYTES:
        return None, f"larger than FILE_UPLOAD_MAX_BYTES ({settings.FILE_UPLOAD_MAX_BYTES})"
    with tempfile.TemporaryFile() as spool:
        source.download_fileobj(spool)
        spool.seek(0)
        checksum, size = sha256_of(spool)
        spool.seek(0)
        origin = {"bucket": record.bucket, "key": record.key}
        with transaction.atomic():
            with connection.cursor() as cursor:  # one registration of these bytes at this key at a time
                cursor.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
                               [f"object-event:{record.bucket}/{record.key}:{checksum}"])
            existing = File.objects.filter(checksum=checksum, created_by=owner, metadata__source=origin).first()
            if existing is not None:
                return existing, "already registered"
            try:
                stored = file_store(stream=spool, original_name=record.key.rsplit("/", 1)[-1], created_by=owner,
                                    checksum=checksum, size=size, extra_metadata={"source": origin})
            except ValidationError as exc:
                return None, "refused: " + "; ".join(exc.messages)
            try:
                file_uploaded_announce(stored)
            except Exception:  # the row rolls back: its object must not stay behind
                default_storage.delete(stored.storage_path)
                raise
    return stored, "registered"
