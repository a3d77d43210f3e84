"""Messaging: how a published message reaches the sockets that subscribed to its channel.

The message's path, one module per step (the Django edge, ``django_websocket.publishing``
and ``django_websocket.brokers``, reads the settings once into
:class:`~django_websocket.messaging.options.Options` and picks the broker; nothing below
imports ``django.conf``):

- ``wire``: the payload format on the broker and the broker channel names (audiences);
- ``history``: message ids, stored entries, what a read after an id finds;
- ``brokers``: one interface (``brokers.base.Broker``), one module per backend:
  ``brokers.local`` (in-process), ``brokers.redis``, ``brokers.sentinel`` (Redis Sentinel,
  its URLs parsed by ``brokers.sentinel_url``) and ``brokers.cluster`` (Redis Cluster);
- ``redis_pubsub``: the Redis subscriber connections a hub reads;
- ``hub``: one per worker: broker channel → the mailboxes of subscribed sockets;
- ``presence``: who is connected to a channel: member dicts and their events;
- ``subscriptions``: one per socket: its channels and its single stream of events.

Layers import downward only: this package imports ``django_websocket.events`` (values),
``django_websocket.frames`` (protocol) and ``django_websocket.exceptions``, never the socket
(``connection``) or the Django glue above it.
"""
