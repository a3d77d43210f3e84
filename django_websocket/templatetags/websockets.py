"""The ``{% websocket_url %}`` template tag: ``{% url %}`` for websocket views.

Usage, after ``{% load websockets %}``::

    const socket = new WebSocket("{% websocket_url 'chat:room' room.slug %}");
    {% websocket_url 'chat:room' slug=room.slug as room_url %}

Arguments are as for ``{% url %}``: the view name, then positional *or* keyword
URL arguments, then optionally ``as var``. The URL is absolute (``ws://`` or
``wss://``, see :func:`django_websocket.urls.websocket_url`) and needs the
request, which ``django.template.context_processors.request`` puts in the
context; without it, only a ``WEBSOCKET_SERVER`` naming a host will do.
"""

from __future__ import annotations

from django import template
from django.core.exceptions import ImproperlyConfigured
from django.template.base import FilterExpression, Parser, Token, kwarg_re
from django.urls import NoReverseMatch
from django.utils.html import conditional_escape

from django_websocket.urls import MissingRequestError
from django_websocket.urls import websocket_url as build_websocket_url

register = template.Library()


class WebSocketURLNode(template.Node):
    """Render the absolute websocket URL of a view, or store it in a context variable."""

    child_nodelists = ()

    def __init__(
        self,
        view_name: FilterExpression,
        args: list[FilterExpression],
        kwargs: dict[str, FilterExpression],
        asvar: str | None,
    ) -> None:
        self.view_name = view_name
        self.args = args
        self.kwargs = kwargs
        self.asvar = asvar

    def render(self, context: template.Context) -> str:
        """Return the escaped URL, or ``""`` after storing the raw URL in ``asvar``.

        As with ``{% url ... as var %}``, ``NoReverseMatch`` is raised only
        without ``as``; with it, the variable is set to ``""``.
        """
        view_name = self.view_name.resolve(context)
        args = [arg.resolve(context) for arg in self.args]
        kwargs = {name: value.resolve(context) for name, value in self.kwargs.items()}
        request = context.get("request")
        url = ""
        try:
            url = build_websocket_url(request, view_name, *args, **kwargs)
        except NoReverseMatch:
            if self.asvar is None:
                raise
        except MissingRequestError as exc:
            raise ImproperlyConfigured(
                "{% websocket_url %} found no request in the template context: add "
                "'django.template.context_processors.request' to the context_processors of your "
                "DjangoTemplates backend and render with a request, or set WEBSOCKET_SERVER to a "
                f"host. ({exc})"
            ) from exc
        if self.asvar is not None:
            context[self.asvar] = url
            return ""
        return conditional_escape(url) if context.autoescape else url


@register.tag
def websocket_url(parser: Parser, token: Token) -> WebSocketURLNode:
    """Compile ``{% websocket_url 'view-name' arg1 arg2 [key=value ...] [as var] %}``."""
    bits = token.split_contents()
    if len(bits) < 2:
        raise template.TemplateSyntaxError(
            f"'{bits[0]}' takes at least one argument, the name of a websocket view."
        )
    view_name = parser.compile_filter(bits[1])
    rest = bits[2:]
    asvar = None
    if len(rest) >= 2 and rest[-2] == "as":
        asvar = rest[-1]
        rest = rest[:-2]
    args: list[FilterExpression] = []
    kwargs: dict[str, FilterExpression] = {}
    for bit in rest:
        match = kwarg_re.match(bit)
        if not match:
            raise template.TemplateSyntaxError(f"Malformed arguments to {bits[0]} tag: {bit!r}")
        name, value = match.groups()
        if name:
            kwargs[name] = parser.compile_filter(value)
        else:
            args.append(parser.compile_filter(value))
    return WebSocketURLNode(view_name, args, kwargs, asvar)
