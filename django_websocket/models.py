"""The app's one table: the durable outbox of ``publish(..., durable=True)``."""

from __future__ import annotations

import uuid

from django.db import models


class OutboxMessage(models.Model):
    """A message published with ``durable=True``, committed with the caller's transaction.

    It waits here until a relay (:mod:`django_websocket.outbox`) has published it to the
    broker; then the row is deleted. *token* makes the broker publish it once even if a
    relay retries it (``Broker.publish(once=...)``).
    """

    token = models.UUIDField(default=uuid.uuid4, editable=False, unique=True)
    channel = models.TextField()
    key = models.TextField(help_text="the broker channel name, audience included")
    kind = models.CharField(max_length=1, help_text="t (text), j (JSON) or b (binary)")
    data = models.BinaryField()
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "django_websocket_outbox"
        ordering = ["pk"]
        verbose_name = "outbox message"

    def __str__(self) -> str:
        return f"{self.channel} #{self.pk}"
