"""`/ws/executions/<id>/`: a run's live progress over WebSocket.

On connect (owner or staff only) the consumer joins the run's group, then sends the snapshot
from the database, then every event in `seq` order: an event older than what was already sent
is dropped, a gap is filled from the run's event history. After the final event (the run ended)
it closes with 1000; a client that connects after the end gets the final snapshot and the close.

Close codes: 4401 not authenticated, 4404 no such run or not yours (the API's 404 rule).
"""

from __future__ import annotations

import json
import logging
from uuid import UUID

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from executions import events
from executions.models import PipelineExecution
from imageflow.api.ownership import is_owner

logger = logging.getLogger(__name__)

CLOSE_NOT_AUTHENTICATED = 4401
CLOSE_NOT_FOUND = 4404
CLOSE_DONE = 1000


@database_sync_to_async
def _visible_execution(execution_id: UUID, user) -> bool:
    execution = PipelineExecution.objects.filter(id=execution_id).only("id", "created_by").first()
    return execution is not None and is_owner(execution, user=user)


class ExecutionProgressConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self) -> None:
        self.group = None
        self.last_seq = 0
        self.finished = False
        user = self.scope.get("user")
        await self.accept()
        if user is None or not user.is_authenticated:
            await self.close(code=CLOSE_NOT_AUTHENTICATED)
            return
        try:
            self.execution_id = UUID(str(self.scope["url_route"]["kwargs"]["execution_id"]))
        except ValueError:
            await self.close(code=CLOSE_NOT_FOUND)
            return
        if not await _visible_execution(self.execution_id, user):
            await self.close(code=CLOSE_NOT_FOUND)
            return
        # Join first, then read the snapshot: nothing published in between is missed.
        self.group = events.group_name(self.execution_id)
        await self.channel_layer.group_add(self.group, self.channel_name)
        snapshot = await database_sync_to_async(events.snapshot)(self.execution_id)
        if snapshot is None:
            await self.close(code=CLOSE_NOT_FOUND)
            return
        self.last_seq = snapshot["seq"]
        await self.send_json(snapshot)
        if snapshot["final"]:
            await self._finish()

    async def disconnect(self, code: int) -> None:
        if self.group:
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive_json(self, content, **kwargs) -> None:
        # Clients only listen; a {"type": "snapshot"} request resends the current state.
        if isinstance(content, dict) and content.get("type") == "snapshot" and not self.finished:
            snapshot = await database_sync_to_async(events.snapshot)(self.execution_id)
            if snapshot is not None:
                self.last_seq = max(self.last_seq, snapshot["seq"])
                await self.send_json(snapshot)

    async def progress_event(self, message: dict) -> None:
        if self.finished:
            return
        seq = int(message["seq"])
        if seq <= self.last_seq:
            return
        if seq > self.last_seq + 1:
            missing = await database_sync_to_async(events.history)(self.execution_id, after=self.last_seq)
            for earlier in missing:
                if earlier["seq"] < seq:
                    await self._deliver(earlier["seq"], bool(earlier.get("final")), json.dumps(earlier))
                    if self.finished:
                        return
        await self._deliver(seq, bool(message["final"]), message["text"])

    async def _deliver(self, seq: int, final: bool, text: str) -> None:
        self.last_seq = seq
        await self.send(text_data=text)
        if final:
            await self._finish()

    async def _finish(self) -> None:
        self.finished = True
        if self.group:
            await self.channel_layer.group_discard(self.group, self.channel_name)
            self.group = None
        await self.close(code=CLOSE_DONE)
